public import Foundation
import GRDB
import JWTKit

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
        let now = self.now()
        let ttl = ttlSeconds ?? self.configuration.tokens.ttlSeconds
        let (token, claims) = try await self.tokens.issue(transferId: transferId, recipient: recipient, ttl: ttl, now: now)
        let issuance = TokenIssuanceRecord(
            tokenId: claims.jti.value,
            transferId: transferId,
            recipient: recipient,
            keyId: self.tokens.activeKeyId,
            issuedAt: now,
            expiresAt: claims.exp.value,
            usedAt: nil
        )
        try await self.database.writer.write { db in try issuance.insert(db) }
        let base =
            self.configuration.http.publicBaseURL.hasSuffix("/")
            ? String(self.configuration.http.publicBaseURL.dropLast()) : self.configuration.http.publicBaseURL
        return DownloadGrant(recipient: recipient, url: "\(base)/v1/files/\(token)", expiresAt: claims.exp.value)
    }

    /// Grants for every recipient of a clean transfer (none otherwise).
    public func issueDownloads(for record: TransferRecord, recipients: [String]) async throws -> [DownloadGrant] {
        guard record.state.isDownloadable else { return [] }
        var grants: [DownloadGrant] = []
        for recipient in recipients {
            grants.append(try await self.issueDownload(transferId: record.id, recipient: recipient))
        }
        return grants
    }

    // MARK: Deletion

    /// Retracts a transfer: bytes removed unless another live transfer shares them, row kept as `deleted`.
    public func delete(transferId: String, actor: String, server: String? = nil, reason: String? = nil) async throws {
        guard let (record, _) = try await self.transfer(id: transferId, server: server) else {
            throw BrokerError.transferNotFound(transferId)
        }
        guard record.state != .deleted, record.state != .purged else { return }
        let now = self.now()
        let store = self.store
        try await self.database.writer.write { db in
            try TransferRecord.filter(key: transferId).updateAll(db, Column("state").set(to: TransferState.deleted), Column("updatedAt").set(to: now))
            if record.state == .quarantined {
                try store.removeQuarantined(transferId: transferId)
            } else {
                let sharing =
                    try TransferRecord
                    .filter(Column("sha256") == record.sha256 && [TransferState.stored, .released].contains(Column("state")))
                    .fetchCount(db)
                if sharing == 0 {
                    try store.removeClean(sha256: record.sha256)
                }
            }
            var details = ["previousState": record.state.rawValue]
            details["reason"] = reason
            try AuditLog.append(db, at: now, actor: actor, action: "transfer.deleted", transferId: transferId, details: details)
        }
    }
}
