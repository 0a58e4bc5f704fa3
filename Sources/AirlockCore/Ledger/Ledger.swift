public import Foundation
import GRDB

/// The ledger and store as both the server and the admin commands use them: queries, download-token issuance
/// and deletion.
public struct Ledger: Sendable {
    /// The configuration.
    public let configuration: AirlockConfiguration
    /// The database.
    public let database: AppDatabase
    /// The bytes on disk.
    public let store: FileStore
    /// Download tokens.
    public let tokens: DownloadTokens
    /// The clock.
    public let now: @Sendable () -> Date

    /// Creates a ledger over an open database.
    public init(
        configuration: AirlockConfiguration,
        database: AppDatabase,
        store: FileStore,
        tokens: DownloadTokens,
        now: @escaping @Sendable () -> Date
    ) {
        self.configuration = configuration
        self.database = database
        self.store = store
        self.tokens = tokens
        self.now = now
    }

    // MARK: Queries

    /// A transfer and its recipients; nil when unknown or, with `server`, handed off by another server.
    public func transfer(id: String, server: String? = nil) async throws -> (TransferRecord, [String])? {
        try await self.database.writer.read { db in
            guard let record = try TransferRecord.fetchOne(db, key: id), server == nil || record.server == server else { return nil }
            let recipients = try RecipientRecord.filter(Column("transferId") == id).order(Column("recipient")).fetchAll(db).map(\.recipient)
            return (record, recipients)
        }
    }

    /// The transfer an XEP-0363 upload path holds, if any.
    public func transfer(inSlot path: String) async throws -> TransferRecord? {
        try await self.database.writer.read { db in
            guard let slot = try UploadSlotRecord.fetchOne(db, key: path) else { return nil }
            return try TransferRecord.fetchOne(db, key: slot.transferId)
        }
    }

    // MARK: Hand-offs

    /// The clean verdict these signatures gave the same bytes before, if any. Blocks: call it on a worker.
    public func cachedVerdict(sha256: String, signatureVersion: String) throws -> VerdictCacheRecord? {
        try self.database.writer.read { db in
            try VerdictCacheRecord.fetchWithCachedStatement(db, sha256: sha256, signatureVersion: signatureVersion)
        }
    }

    /// Records a hand-off in one write transaction: the transfer, its recipients, their download tokens, its
    /// XEP-0363 slot (``BrokerError/slotTaken(_:)`` when another transfer claimed it first), the verdict cache
    /// entry and the audit entry. `inTransaction` runs inside it, before the rows are written (the broker moves
    /// clean bytes into the store there, so a concurrent delete of the same content cannot interleave). Blocks:
    /// call it on a worker.
    public func recordHandOff(_ entry: HandOffEntry, inTransaction: () throws -> Void) throws {
        try self.database.writer.write { db in
            let transfer = entry.transfer
            let (transferId, sha256, now) = (transfer.id, transfer.sha256, transfer.createdAt)
            if let slot = entry.slot {
                guard try UploadSlotRecord.fetchOne(db, key: slot) == nil else { throw BrokerError.slotTaken(slot) }
            }
            try inTransaction()
            if entry.cacheVerdict, let detectedType = transfer.detectedType {
                try VerdictCacheRecord(
                    sha256: sha256,
                    signatureVersion: transfer.signatureVersion,
                    detectedType: detectedType,
                    typeDescription: transfer.typeDescription ?? "",
                    createdAt: now
                ).saveWithCachedStatement(db)
            }
            try transfer.insertWithCachedStatement(db)
            for recipient in entry.recipients {
                try RecipientRecord(transferId: transferId, recipient: recipient).insertWithCachedStatement(db)
            }
            for issuance in entry.issuances {
                try issuance.insertWithCachedStatement(db)
            }
            var details = ["sha256": sha256, "size": String(transfer.size), "verdict": entry.verdict.kind.rawValue, "state": transfer.state.rawValue]
            details["signature"] = entry.verdict.signature
            details["reason"] = entry.verdict.reason
            if let slot = entry.slot {
                try UploadSlotRecord(path: slot, transferId: transferId, createdAt: now).insertWithCachedStatement(db)
                details["slot"] = slot
            }
            try AuditLog.append(db, at: now, actor: "server:\(transfer.server)", action: "transfer.created", transferId: transferId, details: details)
        }
    }

    // MARK: Downloads

    /// Marks a single-use token used; false when it already was (or was never issued).
    public func consumeToken(id tokenId: String, at now: Date) async throws -> Bool {
        try await self.database.writer.write { db in
            try TokenIssuanceRecord.filter(Column("tokenId") == tokenId && Column("usedAt") == nil)
                .updateAll(db, Column("usedAt").set(to: now)) == 1
        }
    }

    /// Records one served download.
    public func recordDownload(_ download: DownloadRecord) async throws {
        try await self.database.writer.write { db in
            var row = download
            try row.insert(db)
        }
    }

    // MARK: Tokens

    /// A download URL for one recipient.
    public struct DownloadGrant: Sendable, Equatable {
        /// The recipient.
        public var recipient: String
        /// The URL to put in the chat message.
        public var url: String
        /// When it stops working.
        public var expiresAt: Date
    }

    /// Mints a download URL for `recipient` of a downloadable transfer and records the issuance.
    public func issueDownload(transferId: String, recipient: String, ttlSeconds: Int? = nil, server: String? = nil) async throws -> DownloadGrant {
        guard let (record, recipients) = try await self.transfer(id: transferId, server: server) else {
            throw BrokerError.transferNotFound(transferId)
        }
        guard record.state.isDownloadable else {
            throw BrokerError.notDownloadable(id: transferId, state: record.state)
        }
        guard recipients.contains(recipient) else {
            throw BrokerError.notARecipient(recipient)
        }
        let (grant, issuance) = try self.mintDownload(transferId: transferId, recipient: recipient, ttlSeconds: ttlSeconds, now: self.now())
        try await self.database.writer.write { db in try issuance.insert(db) }
        return grant
    }

    /// Mints a download token and its issuance record, without writing anything: the caller inserts the record,
    /// in its own transaction.
    func mintDownload(transferId: String, recipient: String, ttlSeconds: Int? = nil, now: Date) throws -> (DownloadGrant, TokenIssuanceRecord) {
        let ttl = ttlSeconds ?? self.configuration.tokens.ttlSeconds
        let (token, claims) = try self.tokens.issue(transferId: transferId, recipient: recipient, ttl: ttl, now: now)
        let issuance = TokenIssuanceRecord(
            tokenId: claims.jti,
            transferId: transferId,
            recipient: recipient,
            keyId: self.tokens.activeKeyId,
            issuedAt: now,
            expiresAt: claims.exp,
            usedAt: nil
        )
        let base =
            self.configuration.http.publicBaseURL.hasSuffix("/")
            ? String(self.configuration.http.publicBaseURL.dropLast()) : self.configuration.http.publicBaseURL
        return (DownloadGrant(recipient: recipient, url: "\(base)/v1/files/\(token)", expiresAt: claims.exp), issuance)
    }

    // MARK: Deletion

    /// Retracts a transfer: row kept as `deleted`, then its bytes removed unless another live transfer shares them.
    ///
    /// - Parameter server: the IM server asking, when it is one: it sees only its own transfers, and cannot delete
    ///   a quarantined one (``BrokerError/heldInQuarantine(id:)``): that sample is the administrators' evidence.
    public func delete(transferId: String, actor: String, server: String? = nil, reason: String? = nil) async throws {
        guard try await self.transfer(id: transferId, server: server) != nil else {
            throw BrokerError.transferNotFound(transferId)
        }
        let now = self.now()
        // Decide on the state as it is inside the transaction: a concurrent release, purge or delete wins or loses
        // as a whole.
        let previous = try await self.database.writer.write { db -> TransferRecord? in
            guard let record = try TransferRecord.fetchOne(db, key: transferId), record.state != .deleted, record.state != .purged else {
                return nil
            }
            if server != nil, record.state == .quarantined {
                throw BrokerError.heldInQuarantine(id: transferId)
            }
            try TransferRecord.filter(key: transferId).updateAll(db, Column("state").set(to: TransferState.deleted), Column("updatedAt").set(to: now))
            var details = ["previousState": record.state.rawValue]
            details["reason"] = reason
            try AuditLog.append(db, at: now, actor: actor, action: "transfer.deleted", transferId: transferId, details: details)
            return record
        }
        if let previous {
            try await self.removeBytes(of: previous)
        }
    }

    /// Removes the bytes of a transfer that is no longer live, after its new state was committed: a crash in
    /// between leaves orphan bytes (harmless, reported by `airlock doctor`), never a live row without bytes.
    /// Clean bytes stay while another stored or released transfer shares them.
    func removeBytes(of record: TransferRecord) async throws {
        let store = self.store
        if record.state == .quarantined {
            try store.removeQuarantined(transferId: record.id)
            return
        }
        // In a write transaction, so that a concurrent upload of the same content cannot interleave.
        try await self.database.writer.write { db in
            let sharing =
                try TransferRecord
                .filter(Column("sha256") == record.sha256 && [TransferState.stored, .released].contains(Column("state")))
                .fetchCount(db)
            if sharing == 0 {
                try store.removeClean(sha256: record.sha256)
            }
        }
    }

    /// Removes bytes that no row accounts for: clean files no stored or released transfer references, and
    /// quarantine files of transfers that were never recorded (a crash between storing and committing).
    ///
    /// - Returns: the removed paths.
    public func removeOrphanedBytes() async throws -> [String] {
        let store = self.store
        return try await self.database.writer.write { db in
            let live = Set(
                try String.fetchAll(db, sql: "SELECT DISTINCT sha256 FROM transfer WHERE state IN ('stored', 'released')")
                    .map { store.cleanPath(sha256: $0) }
            )
            let quarantined = Set(
                try String.fetchAll(db, sql: "SELECT id FROM transfer WHERE state = 'quarantined'").map { store.quarantinePath(transferId: $0) }
            )
            var removed: [String] = []
            for path in FileStore.regularFiles(under: store.filesDirectory) where !live.contains(path) {
                try FileManager.default.removeItem(atPath: path)
                removed.append(path)
            }
            for path in FileStore.regularFiles(under: store.quarantineDirectory)
            where !quarantined.contains(path) && !(path as NSString).lastPathComponent.hasPrefix(".") {
                try FileManager.default.removeItem(atPath: path)
                removed.append(path)
            }
            return removed
        }
    }
}

/// Everything one hand-off writes to the ledger, decided before the transaction starts.
public struct HandOffEntry: Sendable {
    /// The transfer row.
    public var transfer: TransferRecord
    /// Its recipients, sorted, without duplicates.
    public var recipients: [String]
    /// The download tokens minted for them (clean transfers only).
    public var issuances: [TokenIssuanceRecord]
    /// The verdict (with its signature or reason, for the audit entry).
    public var verdict: Verdict
    /// Whether to remember this clean verdict for the same bytes and signatures.
    public var cacheVerdict: Bool
    /// The XEP-0363 upload path to claim, if any.
    public var slot: String?
}
