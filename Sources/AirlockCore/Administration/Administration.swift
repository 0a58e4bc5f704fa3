public import Foundation
import GRDB

#if canImport(Glibc)
    import Glibc
#endif

/// What administrators do with the ledger and store, on the same files as a running server.
public struct Administration: Sendable {
    /// Queries, tokens and deletion.
    public let ledger: Ledger
    /// The operating-system user, recorded as `admin:<user>` in the audit log.
    public let actor: String

    /// Opens the existing ledger of `configuration` (it is never created here).
    public static func open(
        configuration: AirlockConfiguration,
        now: @escaping @Sendable () -> Date = { Date() }
    ) async throws -> Administration {
        let store = FileStore(configuration.storage)
        guard FileManager.default.fileExists(atPath: store.databasePath) else {
            throw AdminError.noLedger(path: store.databasePath)
        }
        let database = try AppDatabase(path: store.databasePath)
        let ledger = Ledger(
            configuration: configuration,
            database: database,
            store: store,
            tokens: DownloadTokens(configuration.tokens),
            now: now
        )
        return Administration(ledger: ledger, actor: "admin:\(Self.operatingSystemUser)")
    }

    /// The user running this process (the invoking user under sudo).
    static var operatingSystemUser: String {
        if let sudoUser = ProcessInfo.processInfo.environment["SUDO_USER"], !sudoUser.isEmpty {
            return sudoUser
        }
        return NSUserName()
    }

    var database: AppDatabase { self.ledger.database }
    var store: FileStore { self.ledger.store }

    // MARK: Queries

    /// Which transfers to list.
    public struct TransferFilter: Sendable {
        /// Only this sender.
        public var sender: String?
        /// Only transfers with this recipient.
        public var recipient: String?
        /// Only transfers created at or after this time.
        public var since: Date?
        /// Only this verdict.
        public var verdict: Verdict.Kind?
        /// Only these states.
        public var states: [TransferState]?
        /// At most this many, newest first.
        public var limit: Int

        /// Creates a filter.
        public init(
            sender: String? = nil,
            recipient: String? = nil,
            since: Date? = nil,
            verdict: Verdict.Kind? = nil,
            states: [TransferState]? = nil,
            limit: Int = 100
        ) {
            self.sender = sender
            self.recipient = recipient
            self.since = since
            self.verdict = verdict
            self.states = states
            self.limit = limit
        }
    }

    /// A transfer with its recipients.
    public struct TransferSummary: Sendable, Equatable {
        /// The row.
        public var record: TransferRecord
        /// Its recipients.
        public var recipients: [String]
    }

    /// Transfers matching `filter`, newest first.
    public func transfers(_ filter: TransferFilter) async throws -> [TransferSummary] {
        try await self.database.writer.read { db in
            var request = TransferRecord.all()
            if let sender = filter.sender { request = request.filter(Column("sender") == sender) }
            if let since = filter.since { request = request.filter(Column("createdAt") >= since) }
            if let verdict = filter.verdict { request = request.filter(Column("verdict") == verdict) }
            if let states = filter.states { request = request.filter(states.contains(Column("state"))) }
            if let recipient = filter.recipient {
                request = request.filter(
                    sql: "id IN (SELECT transferId FROM transferRecipient WHERE recipient = ?)",
                    arguments: [recipient]
                )
            }
            let records = try request.order(Column("createdAt").desc, Column("id")).limit(filter.limit).fetchAll(db)
            return try records.map { record in
                let recipients = try RecipientRecord.filter(Column("transferId") == record.id).order(Column("recipient"))
                    .fetchAll(db).map(\.recipient)
                return TransferSummary(record: record, recipients: recipients)
            }
        }
    }

    /// Everything known about one transfer.
    public struct TransferDetail: Sendable {
        /// The transfer and recipients.
        public var summary: TransferSummary
        /// Its audit history, oldest first.
        public var audit: [AuditEntry]
        /// Its downloads, oldest first.
        public var downloads: [DownloadRecord]
    }

    /// One transfer with its audit history and downloads.
    public func detail(id: String) async throws -> TransferDetail {
        let found = try await self.database.writer.read { db -> TransferDetail? in
            guard let record = try TransferRecord.fetchOne(db, key: id) else { return nil }
            let recipients = try RecipientRecord.filter(Column("transferId") == id).order(Column("recipient")).fetchAll(db).map(\.recipient)
            let audit = try AuditEntry.filter(Column("transferId") == id).order(Column("id")).fetchAll(db)
            let downloads = try DownloadRecord.filter(Column("transferId") == id).order(Column("id")).fetchAll(db)
            return TransferDetail(summary: TransferSummary(record: record, recipients: recipients), audit: audit, downloads: downloads)
        }
        guard let found else { throw AdminError.unknownTransfer(id) }
        return found
    }

    /// The audit log, oldest first; with `transferId`, only that transfer's entries.
    public func auditEntries(transferId: String? = nil, limit: Int? = nil) async throws -> [AuditEntry] {
        try await self.database.writer.read { db in
            var request = AuditEntry.order(Column("id"))
            if let transferId { request = request.filter(Column("transferId") == transferId) }
            if let limit { request = request.order(Column("id").desc).limit(limit) }
            let entries = try request.fetchAll(db)
            return limit == nil ? entries : entries.reversed()
        }
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
            signatureVersion: inspector.signatures.version
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
        guard let record = try await self.database.writer.read({ db in try TransferRecord.fetchOne(db, key: id) }) else {
            throw AdminError.unknownTransfer(id)
        }
        return record
    }

    /// Rescans a quarantined transfer with the current signatures. The state does not change (a clean result
    /// still needs a release); the new verdict is recorded in the audit log.
    public func rescan(id: String, inspector: Inspector) async throws -> RescanOutcome {
        let (outcome, staging) = try await self.decryptAndInspect(try await self.record(id), inspector: inspector)
        try? FileManager.default.removeItem(atPath: staging)
        let now = self.ledger.now()
        try await self.database.writer.write { db in
            var details = ["verdict": outcome.current.kind.rawValue, "signatureVersion": outcome.signatureVersion]
            details["signature"] = outcome.current.signature
            details["reason"] = outcome.current.reason
            try AuditLog.append(db, at: now, actor: self.actor, action: "quarantine.rescanned", transferId: id, details: details)
        }
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
        let now = self.ledger.now()
        let store = self.store
        do {
            try await self.database.writer.write { db in
                // Re-read inside the transaction: a concurrent delete or release wins.
                guard let current = try TransferRecord.fetchOne(db, key: id), current.state == .quarantined else {
                    throw AdminError.wrongState(id: id, state: try TransferRecord.fetchOne(db, key: id)?.state ?? .deleted, needed: "quarantined")
                }
                try store.storeClean(stagingPath: staging, sha256: record.sha256)
                try TransferRecord.filter(key: id).updateAll(db, Column("state").set(to: TransferState.released), Column("updatedAt").set(to: now))
                var details = [
                    "reason": reason, "forced": String(force), "signatureVersion": outcome.signatureVersion,
                    "verdict": outcome.current.kind.rawValue,
                ]
                details["signature"] = outcome.current.signature
                details["rescanReason"] = outcome.current.reason
                try AuditLog.append(db, at: now, actor: self.actor, action: "quarantine.released", transferId: id, details: details)
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
        try await self.ledger.delete(transferId: id, actor: self.actor, reason: reason)
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
        let now = self.ledger.now()
        do {
            try await self.database.writer.write { db in
                _ = try AuditLog.append(db, at: now, actor: self.actor, action: "quarantine.exported", transferId: id, details: ["to": destination])
            }
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
    public func issueDownload(transferId: String, recipient: String, ttlSeconds: Int? = nil) async throws -> Ledger.DownloadGrant {
        guard let (record, recipients) = try await self.ledger.transfer(id: transferId) else {
            throw AdminError.unknownTransfer(transferId)
        }
        guard record.state.isDownloadable else {
            throw BrokerError.notDownloadable(id: transferId, state: record.state)
        }
        guard recipients.contains(recipient) else {
            throw BrokerError.notARecipient(recipient)
        }
        let now = self.ledger.now()
        let (grant, issuance) = try self.ledger.mintDownload(transferId: transferId, recipient: recipient, ttlSeconds: ttlSeconds, now: now)
        try await self.database.writer.write { db in
            try issuance.insert(db)
            try AuditLog.append(
                db,
                at: now,
                actor: self.actor,
                action: "token.issued",
                transferId: transferId,
                details: [
                    "recipient": recipient, "expiresAt": AuditLog.timestamp(grant.expiresAt), "tokenId": issuance.tokenId,
                    "keyId": issuance.keyId,
                ]
            )
        }
        return grant
    }
}
