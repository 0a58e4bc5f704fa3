public import Foundation
import Logging
import NIOPosix
import Synchronization

/// What one reload did: the configuration's part and the signatures' part.
public struct ReloadReport: Sendable {
    /// What asked for it: `SIGHUP`, `check` (the periodic look at the signature files) or `request`.
    public var trigger: String
    /// When it finished.
    public var finishedAt: Date
    /// The configuration change, when the file was read and valid.
    public var configuration: ConfigurationChange?
    /// Why the configuration file was not applied (it names the key); nothing of it changed then.
    public var configurationError: String?
    /// The signatures' part.
    public var signatures: SignatureReload

    /// Whether anything failed.
    public var failed: Bool {
        if self.configurationError != nil { return true }
        if case .failed = self.signatures.outcome { return true }
        return false
    }
}

extension Broker {
    /// Reloads what can change while the server runs: the configuration `next` (when given; an invalid one,
    /// `.failure`, changes nothing) and the signatures (when their files or the scanner and policy keys changed).
    /// Keys that only a restart can change keep their running values and are reported. The outcome is logged,
    /// audited (`configuration.reloaded`, `signatures.reloaded`, `signatures.reloadFailed`) when something changed
    /// or failed, written to `var/run/<node>/reload-status.json` for `airlock reload`, and passed to the
    /// observers.
    ///
    /// - Parameters:
    ///   - next: the configuration file read again; nil for a check of the signature files alone.
    ///   - trigger: what asked, for the log and the status.
    public func reload(_ next: Result<AirlockConfiguration, any Error>?, trigger: String) async -> ReloadReport {
        var change: ConfigurationChange?
        var configurationError: String?
        switch next {
        case .success(let configuration):
            let reloading = self.configuration.reloading(to: configuration)
            if !reloading.changed.isEmpty {
                self.live.replace(with: reloading.applied)
                self.ledger.notifications.update(reloading.applied.notifications.webhooks)
            }
            change = reloading
        case .failure(let error):
            configurationError = "\(error)"
        case nil:
            break
        }
        let signatures = await self.inspector.reload(change?.applied, retryFailed: next != nil)
        let report = ReloadReport(
            trigger: trigger,
            finishedAt: self.now(),
            configuration: change,
            configurationError: configurationError,
            signatures: signatures
        )
        self.log(report)
        await self.audit(report)
        let serving = self.inspector.isServing
        try? await self.threadPool.runIfActive { self.writeReloadStatus(report, serving: serving) }
        for observer in self.reloadObservers.withLock({ $0 }) {
            observer(report)
        }
        return report
    }

    /// Calls `observer` after every reload.
    public func observeReloads(_ observer: @escaping @Sendable (ReloadReport) -> Void) {
        self.reloadObservers.withLock { $0.append(observer) }
    }

    private func log(_ report: ReloadReport) {
        if let error = report.configurationError {
            self.logger.error("configuration not reloaded: the file is invalid; nothing of it changed", metadata: ["error": "\(error)"])
        }
        if let change = report.configuration {
            if !change.needRestart.isEmpty {
                self.logger.warning(
                    "configuration keys changed that only a restart applies; their running values stay",
                    metadata: ["keys": "\(change.needRestart.joined(separator: ", "))"]
                )
            }
            if !change.changed.isEmpty {
                self.logger.notice("configuration reloaded", metadata: ["keys": "\(change.changed.joined(separator: ", "))"])
            }
        }
    }

    private func audit(_ report: ReloadReport) async {
        var events: [AuditEvent] = []
        var node: [String: String] = [:]
        node["node"] = self.configuration.node.id
        if let change = report.configuration, !change.changed.isEmpty || !change.needRestart.isEmpty {
            var details = node
            details["trigger"] = report.trigger
            details["changed"] = change.changed.joined(separator: ",")
            if !change.needRestart.isEmpty { details["needRestart"] = change.needRestart.joined(separator: ",") }
            events.append(
                AuditEvent(at: report.finishedAt, actor: "airlock:reload", action: "configuration.reloaded", transferId: nil, details: details)
            )
        }
        switch report.signatures.outcome {
        case .reloaded(let previous):
            var details = node
            details["trigger"] = report.trigger
            details["version"] = report.signatures.signatures.version
            details["previousVersion"] = previous.version
            details["signatures"] = "\(report.signatures.signatures.signatureCount)"
            events.append(
                AuditEvent(at: report.finishedAt, actor: "airlock:reload", action: "signatures.reloaded", transferId: nil, details: details)
            )
        case .failed(let error):
            var details = node
            details["trigger"] = report.trigger
            details["error"] = error
            details["version"] = report.signatures.signatures.version
            events.append(
                AuditEvent(at: report.finishedAt, actor: "airlock:reload", action: "signatures.reloadFailed", transferId: nil, details: details)
            )
        case .unchanged:
            break
        }
        for event in events {
            do {
                try await self.ledger.appendAudit(event)
            } catch {
                self.logger.error("cannot audit a reload", metadata: ["action": "\(event.action)", "error": "\(error)"])
            }
        }
        // Webhooks: `signatures.reloaded`, `signatures.reloadFailed`.
        let notification: NotificationEvent?
        switch report.signatures.outcome {
        case .reloaded(let previous):
            notification = .signaturesReloaded(
                version: report.signatures.signatures.version,
                at: report.finishedAt,
                details: [
                    "previousVersion": previous.version, "signatures": "\(report.signatures.signatures.signatureCount)",
                    "node": self.configuration.node.id, "trigger": report.trigger,
                ]
            )
        case .failed(let error):
            notification = .signaturesReloadFailed(
                error: error,
                file: Self.culprit(in: error),
                version: report.signatures.signatures.version,
                at: report.finishedAt
            )
        case .unchanged:
            notification = nil
        }
        if let notification {
            do {
                try await self.ledger.enqueueNotification(notification)
            } catch {
                self.logger.error("cannot queue the reload's webhook event", metadata: ["error": "\(error)"])
            }
        }
    }

    /// The signature file a load error names (libclamav's culprit, as ``SignatureDatabaseError`` words it).
    static func culprit(in error: String) -> String? {
        guard let start = error.range(of: "cannot load signatures: "),
            let end = error.range(of: " is corrupt", range: start.upperBound..<error.endIndex)
        else { return nil }
        return String(error[start.upperBound..<end.lowerBound])
    }

    /// `var/run/<node>/reload-status.json`, replaced atomically: what `airlock reload` waits for and prints.
    public var reloadStatusPath: String {
        (self.store.runDirectory as NSString).appendingPathComponent("reload-status.json")
    }

    private func writeReloadStatus(_ report: ReloadReport, serving: Bool) {
        let sequence = self.reloadSequence.add(1, ordering: .relaxed).newValue
        let status = ReloadStatus(report, sequence: sequence, pid: getpid(), serving: serving)
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            try FileStore.writePrivately(try encoder.encode(status), to: self.reloadStatusPath)
        } catch {
            self.logger.error("cannot write the reload status", metadata: ["path": "\(self.reloadStatusPath)", "error": "\(error)"])
        }
    }
}

/// The last reload as `var/run/<node>/reload-status.json` holds it.
public struct ReloadStatus: Codable, Sendable {
    /// Counts the reloads of one server process (with `pid`, tells a new status from an old one).
    public var sequence: Int
    /// The server's process id.
    public var pid: Int32
    public var trigger: String
    public var finishedAt: String
    /// `ok` or `failed`.
    public var status: String
    /// `unchanged`, `reloaded` or `failed`.
    public var signatures: String
    public var signatureVersion: String
    public var signatureCount: Int
    public var signaturesLoadedAt: String
    public var previousSignatureVersion: String?
    public var signatureError: String?
    public var reloadSeconds: Double
    public var configurationChanged: [String]
    public var configurationNeedsRestart: [String]
    public var configurationError: String?
    /// Whether signatures serve after it (false only after a failed blocking reload); nil from older servers.
    public var serving: Bool?

    init(_ report: ReloadReport, sequence: Int, pid: Int32, serving: Bool) {
        self.serving = serving
        self.sequence = sequence
        self.pid = pid
        self.trigger = report.trigger
        self.finishedAt = AuditLog.timestamp(report.finishedAt)
        self.status = report.failed ? "failed" : "ok"
        switch report.signatures.outcome {
        case .unchanged: self.signatures = "unchanged"
        case .reloaded(let previous):
            self.signatures = "reloaded"
            self.previousSignatureVersion = previous.version
        case .failed(let error):
            self.signatures = "failed"
            self.signatureError = error
        }
        self.signatureVersion = report.signatures.signatures.version
        self.signatureCount = report.signatures.signatures.signatureCount
        self.signaturesLoadedAt = AuditLog.timestamp(report.signatures.loadedAt)
        self.reloadSeconds = report.signatures.duration.seconds
        self.configurationChanged = report.configuration?.changed ?? []
        self.configurationNeedsRestart = report.configuration?.needRestart ?? []
        self.configurationError = report.configurationError
    }
}
