public import Foundation
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// What administrators do with the ledger and store, on the same files as a running server.
public struct Administration: Sendable {
    /// Queries, tokens and deletion.
    public let transferService: TransferService
    /// The operating-system user, recorded as `admin:<user>` in the audit log.
    public let actor: String

    /// Opens the existing ledger of `configuration` (it is never created here).
    public static func open(
        configuration: AirlockConfiguration,
        now: @escaping @Sendable () -> Date = { Date() }
    ) async throws -> Administration {
        let store = FileStore(configuration.storage, node: configuration.node.id)
        if case .sqlite = configuration.ledger.backend, !FileManager.default.fileExists(atPath: store.databasePath) {
            throw AdminError.noLedger(path: store.databasePath)
        }
        let transfers = TransferService(
            configuration: configuration,
            ledger: try await LedgerConnector.open(configuration, sqlitePath: store.databasePath, logger: Logger(label: "airlock.ledger")),
            store: store,
            tokens: DownloadTokens(configuration.tokens),
            now: now
        )
        return Administration(transferService: transfers, actor: "admin:\(Self.operatingSystemUser)")
    }

    /// Closes the ledger's connections.
    public func close() async {
        await self.ledger.close()
    }

    /// The user running this process (the invoking user under sudo).
    static var operatingSystemUser: String {
        if let sudoUser = ProcessInfo.processInfo.environment["SUDO_USER"], !sudoUser.isEmpty {
            return sudoUser
        }
        return NSUserName()
    }

    /// The ledger.
    public var ledger: any Ledger { self.transferService.ledger }
    var store: FileStore { self.transferService.store }
    var now: Date { self.transferService.now() }

    // MARK: Queries

    /// Which transfers to list.
    public typealias TransferFilter = AirlockCore.TransferFilter
    /// A transfer with its recipients.
    public typealias TransferSummary = AirlockCore.TransferSummary
    /// Everything known about one transfer.
    public typealias TransferDetail = AirlockCore.TransferDetail

    /// Transfers matching `filter`, newest first.
    public func transfers(_ filter: TransferFilter) async throws -> [TransferSummary] {
        try await self.ledger.transfers(filter)
    }

    /// One transfer with its audit history and downloads.
    public func detail(id: String) async throws -> TransferDetail {
        guard let found = try await self.ledger.detail(id: id) else { throw AdminError.unknownTransfer(id) }
        return found
    }

    /// The audit log, oldest first; with `transferId`, only that transfer's entries.
    public func auditEntries(transferId: String? = nil, limit: Int? = nil) async throws -> [AuditEntry] {
        try await self.ledger.auditEntries(transferId: transferId, limit: limit)
    }

    // MARK: Quarantine

    /// What a rescan or release found.
    public struct RescanOutcome: Sendable, Equatable {
        /// The transfer.
        public var id: String
        /// The verdict recorded at hand-off.
        public var previous: Verdict
        /// The verdict with the current signatures and policy.
        public var current: Verdict
        /// The signature version of the new verdict.
        public var signatureVersion: String
    }

    /// Decrypts a quarantined transfer to a staging file, checks its hash and inspects it with the current
    /// signatures. The caller owns (and removes) the returned staging file.
    private func decryptAndInspect(_ record: TransferRecord, inspector: Inspector) async throws -> (RescanOutcome, String) {
        guard record.state == .quarantined else {
            throw AdminError.wrongState(id: record.id, state: record.state, needed: "quarantined")
        }
        let staging = self.store.newStagingPath()
        do {
            try self.store.exportQuarantined(transferId: record.id, to: staging)
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            throw Self.quarantineError(id: record.id, error)
        }
        let report = await inspector.inspect(fileAt: staging, declaredType: record.declaredType, describe: true)
        guard report.sha256 == record.sha256 else {
            try? FileManager.default.removeItem(atPath: staging)
            throw AdminError.hashMismatch(id: record.id)
        }
        let outcome = RescanOutcome(
            id: record.id,
            previous: record.fullVerdict,
            current: report.verdict,
            signatureVersion: report.signatureVersion ?? inspector.signatures.version
        )
        return (outcome, staging)
    }

    /// The admin error for quarantined bytes that could not be decrypted.
    static func quarantineError(id: String, _ error: any Error) -> AdminError {
        switch error {
        case StoreError.unknownQuarantineKey, StoreError.noQuarantineKeyOpens:
            AdminError.missingQuarantineKey(id: id, reason: "\(error)")
        default:
            AdminError.unreadableQuarantine(id: id, reason: "\(error)")
        }
    }

    func record(_ id: String) async throws -> TransferRecord {
        guard let (record, _) = try await self.ledger.transfer(id: id) else {
            throw AdminError.unknownTransfer(id)
        }
        return record
    }

    /// Rescans a quarantined transfer with the current signatures. The state does not change (a clean result
    /// still needs a release); the new verdict is recorded in the audit log.
    public func rescan(id: String, inspector: Inspector) async throws -> RescanOutcome {
        let (outcome, staging) = try await self.decryptAndInspect(try await self.record(id), inspector: inspector)
        try? FileManager.default.removeItem(atPath: staging)
        var details = ["verdict": outcome.current.kind.rawValue, "signatureVersion": outcome.signatureVersion]
        details["signature"] = outcome.current.signature
        details["reason"] = outcome.current.reason
        try await self.ledger.appendAudit(AuditEvent(at: self.now, actor: self.actor, action: "quarantine.rescanned", transferId: id, details: details))
        return outcome
    }

    /// Why a release was refused.
    public enum ReleaseRefusal: Error, Equatable, CustomStringConvertible {
        /// The rescan is still not clean, or the file was infected at hand-off, and `--force` was not given.
        case stillNotClean(RescanOutcome)

        public var description: String {
            switch self {
            case .stillNotClean(let outcome) where outcome.current.isClean:
                "transfer \(outcome.id) was infected at hand-off (\(outcome.previous)); the rescan now finds it clean, but "
                    + "releasing a file that was infected needs --force"
            case .stillNotClean(let outcome):
                "transfer \(outcome.id) is still not clean with the current signatures (\(outcome.current)); "
                    + "release it anyway with --force if you are sure"
            }
        }
    }

    /// Rescans, then releases a quarantined transfer: its bytes move to the content store and it becomes
    /// downloadable (state `released`) for a running server at once.
    ///
    /// - Throws: ``ReleaseRefusal/stillNotClean(_:)`` when the rescan is not clean and `force` is false.
    public func release(id: String, reason: String, force: Bool, inspector: Inspector) async throws -> RescanOutcome {
        let record = try await self.record(id)
        let (outcome, staging) = try await self.decryptAndInspect(record, inspector: inspector)
        // DESIGN §8: a file found infected at hand-off needs --force even when a rescan now finds it clean.
        guard (outcome.current.isClean && record.verdict != .infected) || force else {
            try? FileManager.default.removeItem(atPath: staging)
            throw ReleaseRefusal.stillNotClean(outcome)
        }
        let store = self.store
        var details = [
            "reason": reason, "forced": String(force), "signatureVersion": outcome.signatureVersion, "verdict": outcome.current.kind.rawValue,
        ]
        details["signature"] = outcome.current.signature
        details["rescanReason"] = outcome.current.reason
        let event = AuditEvent(at: self.now, actor: self.actor, action: "quarantine.released", transferId: id, details: details)
        let notification = NotificationEvent(.quarantineReleased, transferId: id, at: event.at, details: ["reason": reason, "actor": self.actor])
        do {
            try await self.ledger.changeTransfer(id: id, event: event, notify: { _ in [notification] }) { current in
                // Decided inside the transaction: a concurrent delete or release wins.
                guard current.state == .quarantined else {
                    throw AdminError.wrongState(id: id, state: current.state, needed: "quarantined")
                }
                try store.storeClean(stagingPath: staging, sha256: record.sha256)
                return .setState(.released)
            }
        } catch {
            try? FileManager.default.removeItem(atPath: staging)
            throw error
        }
        try store.removeQuarantined(transferId: id)
        return outcome
    }

    /// Deletes a quarantined transfer's bytes; the row stays with state `deleted`.
    public func deleteQuarantined(id: String, reason: String) async throws {
        let record = try await self.record(id)
        guard record.state == .quarantined else {
            throw AdminError.wrongState(id: id, state: record.state, needed: "quarantined")
        }
        try await self.transferService.delete(transferId: id, actor: self.actor, reason: reason)
    }

    /// Decrypts a quarantined transfer to a new file at `destination` (mode 0600) for analysis.
    ///
    /// The file is created with `O_CREAT|O_EXCL|O_NOFOLLOW`: an existing file or a symbolic link there is refused
    /// (``AdminError/exportDestinationExists(path:)``). The export is recorded in the audit log before any decrypted
    /// byte is written; if decryption or writing then fails, the partial file is removed and the entry stays, as the
    /// record of an attempt.
    public func export(id: String, to destination: String) async throws {
        let record = try await self.record(id)
        guard record.state == .quarantined else {
            throw AdminError.wrongState(id: id, state: record.state, needed: "quarantined")
        }
        let output: FileHandle
        do {
            output = try FileStore.createExclusiveFile(destination)
        } catch StoreError.destinationExists(let path) {
            throw AdminError.exportDestinationExists(path: path)
        }
        do {
            try await self.ledger.appendAudit(
                AuditEvent(at: self.now, actor: self.actor, action: "quarantine.exported", transferId: id, details: ["to": destination])
            )
        } catch {
            try? output.close()
            unlink(destination)
            throw error
        }
        do {
            try self.store.decryptQuarantined(transferId: id, into: output)
            try output.close()
        } catch {
            try? output.close()
            unlink(destination)
            throw AdminError.exportFailed(id: id, path: destination, reason: "\(error)")
        }
    }

    // MARK: Tokens

    /// Mints a download URL for `recipient` of a downloadable transfer; the issuance row and an audit entry
    /// (`token.issued`: recipient, expiry, token id) are written in one transaction.
    public func issueDownload(transferId: String, recipient: String, ttlSeconds: Int? = nil) async throws -> DownloadGrant {
        do {
            return try await self.transferService.issueDownload(transferId: transferId, recipient: recipient, ttlSeconds: ttlSeconds, auditActor: self.actor)
        } catch BrokerError.transferNotFound {
            throw AdminError.unknownTransfer(transferId)
        }
    }
}
