public import Foundation
import LibMagic
import Logging
import NIOPosix
import Synchronization

/// What a retro-scan did (for metrics and notifications).
public enum RetroscanEvent: Sendable {
    /// Content was scanned again and is still clean.
    case checked(sha256: String)
    /// Content is no longer clean: these transfers were recalled.
    case recalled(sha256: String, verdict: Verdict, transfers: [RecalledTransfer])
    /// A pass ended; `progress` is where the serving signatures stand.
    case passFinished(signatureVersion: String, progress: RetroscanProgress)
}

/// The retro-scan's state as `var/run/<node>/retroscan.json` holds it, for `airlock retroscan status`.
public struct RetroscanStatus: Codable, Sendable {
    /// The signature version the server checks with.
    public var signatureVersion: String
    /// `retroscan.windowHours`.
    public var windowHours: Int
    /// Whether a pass is running.
    public var running: Bool
    /// Contents scanned and transfers recalled by the current (or last) pass.
    public var checkedThisPass: Int
    public var recalledThisPass: Int
    /// When this status was written.
    public var updatedAt: String
    /// Why the last pass stopped early, if it did.
    public var lastError: String?
}

/// Rescans the clean content handed off within `retroscan.windowHours` with the serving signatures, newest first, on
/// at most `retroscan.workers` scan workers, and recalls what they no longer find clean: its transfers become
/// `quarantined` (bytes encrypted into the quarantine, every download URL refused), audited as `transfer.recalled`.
///
/// Progress is the verdict cache: content the serving version found clean has an entry for it, so a restart
/// continues where the last pass stopped, and content handed off after the reload is never scanned twice.
public final class Retroscanner: Sendable {
    private let broker: Broker
    private let requests: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation
    private let observers = Mutex<[@Sendable (RetroscanEvent) -> Void]>([])
    private let stopping = Atomic(false)
    /// The pending ``followUp(after:)``, cancelled by ``finish()``.
    private let followUpTimer = Mutex<Task<Void, Never>?>(nil)
    /// The actor of its audit entries.
    public static let actor = "airlock:retroscan"

    /// A retro-scanner for `broker`; ``run()`` does the work.
    public init(broker: Broker) {
        self.broker = broker
        (self.requests, self.continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Calls `observer` for every event.
    public func observe(_ observer: @escaping @Sendable (RetroscanEvent) -> Void) {
        self.observers.withLock { $0.append(observer) }
    }

    /// Asks for a pass (after a signature reload); passes asked for while one runs collapse into one more.
    public func requestPass() {
        self.continuation.yield()
    }

    /// `var/run/<node>/retroscan.json`.
    public static func statusPath(runDirectory: String) -> String {
        (runDirectory as NSString).appendingPathComponent("retroscan.json")
    }

    /// Runs passes until cancelled: one at once (whatever the last process left unchecked), then one per request.
    public func run() async {
        self.requestPass()
        for await _ in self.requests {
            if Task.isCancelled || self.stopping.load(ordering: .acquiring) { return }
            await self.pass()
        }
    }

    /// Stops ``run()`` after the pass in progress.
    public func finish() {
        self.stopping.store(true, ordering: .releasing)
        self.followUpTimer.withLock { $0?.cancel() }
        self.continuation.finish()
    }

    private func pass() async {
        let broker = self.broker
        let settings = broker.configuration.retroscan
        guard settings.windowHours > 0 else { return }
        var version = broker.inspector.signatures.version
        let lease = Self.lease(scanTimeout: broker.configuration.scanner.scanTimeoutSeconds)
        var checked = 0
        var recalled = 0
        var skipped: Set<String> = []
        // Of `skipped`, those that stay unchecked for `version`: not judged (tried again at the next pass), or
        // recorded under other signatures than the pass claimed them for.
        var stillPending: Set<String> = []
        var lastError: String?
        await self.publish(version: version, windowHours: settings.windowHours, running: true, checked: 0, recalled: 0, error: nil)
        passLoop: while !Task.isCancelled, !self.stopping.load(ordering: .acquiring) {
            let since = broker.now().addingTimeInterval(-Double(settings.windowHours) * 3600)
            let candidates: [RetroscanCandidate]
            do {
                // Leased to this node: nodes sharing the ledger split the pass, batch by batch. What this pass
                // handled already is left out, whatever became of it.
                let now = broker.now()
                candidates = try await broker.ledger.claimRetroscanCandidates(
                    since: since,
                    signatureVersion: version,
                    limit: Self.batchPerWorker * settings.workers,
                    excluding: skipped,
                    node: broker.configuration.node.id,
                    now: now,
                    leaseUntil: now.addingTimeInterval(lease)
                )
            } catch {
                lastError = "cannot read the ledger: \(error)"
                break
            }
            if candidates.isEmpty { break }
            let checkVersion = version
            let outcomes = await withTaskGroup(of: (String, Outcome).self) { group in
                var results: [(String, Outcome)] = []
                var next = candidates.makeIterator()
                for _ in 0..<settings.workers {
                    guard let candidate = next.next() else { break }
                    group.addTask { (candidate.sha256, await self.check(candidate, version: checkVersion)) }
                }
                for await result in group {
                    results.append(result)
                    if !self.stopping.load(ordering: .acquiring), let candidate = next.next() {
                        group.addTask { (candidate.sha256, await self.check(candidate, version: checkVersion)) }
                    }
                }
                return results
            }
            for (sha256, outcome) in outcomes {
                // Whatever happened, not again in this pass: a report stamped with another version (a scanner
                // restarted on newer files) would otherwise bring the same content back forever.
                skipped.insert(sha256)
                switch outcome {
                case .checked(let sameVersion):
                    checked += 1
                    if !sameVersion { stillPending.insert(sha256) }
                case .recalled(let count): recalled += count
                case .skipped:
                    stillPending.insert(sha256)
                case .stop(let reason):
                    lastError = reason
                    break passLoop
                }
            }
            await self.publish(version: version, windowHours: settings.windowHours, running: true, checked: checked, recalled: recalled, error: nil)
            // A reload during the pass: go on with the new signatures (what they checked already counts).
            let serving = broker.inspector.signatures.version
            if serving != version {
                // Everything handled so far has no verdict under the new version.
                stillPending = skipped
                version = serving
            }
        }
        let since = broker.now().addingTimeInterval(-Double(settings.windowHours) * 3600)
        let progress = try? await broker.ledger.retroscanProgress(since: since, signatureVersion: version)
        if let progress {
            self.notify(.passFinished(signatureVersion: version, progress: progress))
        }
        // Look again later when contents this pass did not handle stay unchecked (leased by other nodes: if such a
        // node died, nobody would check them before the next signature change), or when the pass failed.
        if lastError != nil || progress.map({ $0.pending > stillPending.count }) ?? true {
            self.followUp(after: lease)
        }
        await self.publish(
            version: version,
            windowHours: settings.windowHours,
            running: false,
            checked: checked,
            recalled: recalled,
            error: lastError
        )
        if checked + recalled > 0 || lastError != nil {
            broker.logger.notice(
                "retro-scan pass finished",
                metadata: [
                    "signatureVersion": "\(version)", "checked": "\(checked)", "recalled": "\(recalled)",
                    "stoppedBecause": "\(lastError ?? "-")",
                ]
            )
        }
    }

    /// Asks for one more pass `seconds` from now (one such request at a time; none once finishing).
    private func followUp(after seconds: TimeInterval) {
        self.followUpTimer.withLock { timer in
            guard timer == nil, !self.stopping.load(ordering: .acquiring), !Task.isCancelled else { return }
            timer = Task {
                let slept: Void? = try? await Task.sleep(for: .seconds(seconds))
                self.followUpTimer.withLock { $0 = nil }
                if slept != nil, !self.stopping.load(ordering: .acquiring) { self.requestPass() }
            }
        }
    }

    /// Contents claimed at once per worker: a few, so nodes sharing the ledger split a pass finely.
    static let batchPerWorker = 4

    /// How long a claim holds: long enough for its batch to be scanned with every check at the scanner's time
    /// limit, and one more. A lease that runs out during a check only lets another node scan the content again.
    static func lease(scanTimeout: Int) -> TimeInterval {
        Double(Self.batchPerWorker + 1) * Double(scanTimeout)
    }

    private enum Outcome {
        /// Still clean; `sameVersion` when recorded under the version the pass claimed it for.
        case checked(sameVersion: Bool)
        case recalled(Int)
        /// Not checked this pass (the file is missing, or the scan could not judge it): tried again next pass.
        case skipped
        /// The pass cannot go on (the broker shuts down, the ledger fails).
        case stop(String)
    }

    private func check(_ candidate: RetroscanCandidate, version: String) async -> Outcome {
        let broker = self.broker
        // A missing file comes back unscannable ("cannot open the file"): skipped below, and `airlock doctor` reports it.
        let path = broker.store.cleanPath(sha256: candidate.sha256)
        let report = await broker.inspector.inspect(fileAt: path, sha256: candidate.sha256)
        switch report.verdict {
        case .clean:
            let record = VerdictCacheRecord(
                sha256: candidate.sha256,
                signatureVersion: report.signatureVersion ?? version,
                detectedType: report.detectedType?.mimeType ?? "",
                typeDescription: report.detectedType?.description ?? "",
                createdAt: broker.now(),
                scannerFailure: nil
            )
            do {
                try await broker.ledger.recordChecked(record)
            } catch {
                return .stop("cannot record progress in the ledger: \(error)")
            }
            self.notify(.checked(sha256: candidate.sha256))
            return .checked(sameVersion: record.signatureVersion == version)
        case .unscannable(let reason) where !report.scannerFailure:
            if reason.hasPrefix("scanner unavailable") { return .stop(reason) }
            broker.logger.warning(
                "retro-scan: content could not be judged; it stays served and is tried again at the next pass",
                metadata: ["sha256": "\(candidate.sha256)", "reason": "\(reason)"]
            )
            return .skipped
        default:
            do {
                let transfers = try await self.recall(candidate.sha256, verdict: report.verdict, signatureVersion: report.signatureVersion ?? version)
                return .recalled(transfers.count)
            } catch {
                return .stop("cannot recall \(candidate.sha256): \(error)")
            }
        }
    }

    /// Quarantines every stored transfer of `sha256`, then removes the clean bytes unless a released transfer
    /// still shares them.
    func recall(_ sha256: String, verdict: Verdict, signatureVersion: String) async throws -> [RecalledTransfer] {
        let broker = self.broker
        let store = broker.store
        let recalled = try await broker.ledger.recall(
            sha256: sha256,
            verdict: verdict,
            signatureVersion: signatureVersion,
            at: broker.now(),
            actor: Self.actor
        ) { transfer in
            try store.quarantineClean(sha256: sha256, transferId: transfer.id)
        }
        if !recalled.isEmpty {
            // The clean copy goes once no released transfer shares it.
            try await broker.ledger.removeUnsharedContent(sha256: sha256) { try store.removeClean(sha256: sha256) }
        }
        for transfer in recalled {
            broker.logger.warning(
                "transfer recalled: its content is no longer clean",
                metadata: [
                    "transfer": "\(transfer.transfer.id)", "verdict": "\(verdict)",
                    "downloadedBy": "\(transfer.downloadedBy.joined(separator: ","))",
                ]
            )
        }
        if !recalled.isEmpty {
            self.notify(.recalled(sha256: sha256, verdict: verdict, transfers: recalled))
        }
        return recalled
    }

    private func notify(_ event: RetroscanEvent) {
        for observer in self.observers.withLock({ $0 }) {
            observer(event)
        }
    }

    private func publish(version: String, windowHours: Int, running: Bool, checked: Int, recalled: Int, error: String?) async {
        let status = RetroscanStatus(
            signatureVersion: version,
            windowHours: windowHours,
            running: running,
            checkedThisPass: checked,
            recalledThisPass: recalled,
            updatedAt: AuditLog.timestamp(self.broker.now()),
            lastError: error
        )
        let path = Self.statusPath(runDirectory: self.broker.store.runDirectory)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        guard let data = try? encoder.encode(status) else { return }
        try? await self.broker.threadPool.runIfActive { try FileStore.writePrivately(data, to: path) }
    }
}
