public import Foundation

/// What the server and the admin commands do with transfers on top of the ledger and the store: look them up,
/// mint download URLs, delete them and remove their bytes.
public struct TransferService: Sendable {
    /// The configuration in force and the token keys made from it (replaced by a configuration reload).
    public let live: LiveConfiguration
    /// The ledger.
    public let ledger: any Ledger
    /// The bytes on disk.
    public let store: FileStore
    /// The clock.
    public let now: @Sendable () -> Date

    /// The configuration in force now.
    public var configuration: AirlockConfiguration { self.live.current.configuration }
    /// Download tokens with the keys in force now.
    public var tokens: DownloadTokens { self.live.current.tokens }

    /// Creates the service over an open ledger.
    public init(
        configuration: AirlockConfiguration,
        ledger: any Ledger,
        store: FileStore,
        tokens: DownloadTokens,
        now: @escaping @Sendable () -> Date
    ) {
        self.live = LiveConfiguration(configuration, tokens: tokens)
        self.ledger = ledger
        self.store = store
        self.now = now
    }

    // MARK: Queries

    /// A transfer and its recipients; nil when unknown or, with `server`, handed off by another server.
    public func transfer(id: String, server: String? = nil) async throws -> (TransferRecord, [String])? {
        guard let found = try await self.ledger.transfer(id: id), server == nil || found.0.server == server else { return nil }
        return found
    }

    // MARK: Tokens

    /// Mints a download URL for `recipient` of a downloadable transfer and records the issuance (with a
    /// `token.issued` audit entry by `auditActor`, when given).
    public func issueDownload(
        transferId: String,
        recipient: String,
        ttlSeconds: Int? = nil,
        server: String? = nil,
        auditActor: String? = nil
    ) async throws -> DownloadGrant {
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
        let (grant, issuance) = try self.mintDownload(transferId: transferId, recipient: recipient, ttlSeconds: ttlSeconds, now: now)
        let audit = auditActor.map { actor in
            AuditEvent(
                at: now,
                actor: actor,
                action: "token.issued",
                transferId: transferId,
                details: [
                    "recipient": recipient, "expiresAt": AuditLog.timestamp(grant.expiresAt), "tokenId": issuance.tokenId,
                    "keyId": issuance.keyId,
                ]
            )
        }
        try await self.ledger.recordIssuance(issuance, audit: audit)
        return grant
    }

    /// Mints a download token and its issuance record, without writing anything: the caller records it, in its
    /// own transaction.
    func mintDownload(transferId: String, recipient: String, ttlSeconds: Int? = nil, now: Date) throws -> (DownloadGrant, TokenIssuanceRecord) {
        // One state of the configuration for the whole URL, whatever a reload does meanwhile.
        let settings = self.live.current
        let configuration = settings.configuration
        let tokens = settings.tokens
        let ttl = ttlSeconds ?? configuration.tokens.ttlSeconds
        let (token, claims) = try tokens.issue(transferId: transferId, recipient: recipient, ttl: ttl, now: now)
        let issuance = TokenIssuanceRecord(
            tokenId: claims.jti,
            transferId: transferId,
            recipient: recipient,
            keyId: tokens.activeKeyId,
            issuedAt: now,
            expiresAt: claims.exp,
            usedAt: nil
        )
        let base =
            configuration.http.publicBaseURL.hasSuffix("/")
            ? String(configuration.http.publicBaseURL.dropLast()) : configuration.http.publicBaseURL
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
        var details: [String: String] = [:]
        details["reason"] = reason
        let event = AuditEvent(at: self.now(), actor: actor, action: "transfer.deleted", transferId: transferId, details: details)
        // Decided on the state as it is inside the transaction: a concurrent release, purge or delete wins or loses
        // as a whole.
        let notification = NotificationEvent(.quarantineDeleted, transferId: transferId, at: event.at, details: details.merging(["actor": actor]) { $1 })
        let previous = try await self.ledger.changeTransfer(
            id: transferId,
            event: event,
            notify: { before in before.state == .quarantined ? [notification] : [] }
        ) { current in
            guard current.state != .deleted, current.state != .purged else { return .skip }
            if server != nil, current.state == .quarantined {
                throw BrokerError.heldInQuarantine(id: transferId)
            }
            return .setState(.deleted)
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
        try await self.ledger.removeUnsharedContent(sha256: record.sha256) {
            try store.removeClean(sha256: record.sha256)
        }
    }

    /// How old a file without a row must be before it counts as an orphan: on a shared ledger another node may be
    /// between writing it and committing its row (a quarantined upload is encrypted before its transaction); one
    /// SQLite ledger has one node, whose own start-up or check sees no upload in flight.
    public var orphanGrace: TimeInterval {
        if case .sqlite = self.configuration.ledger.backend { return 0 }
        return FileStore.inFlightGrace
    }

    /// Removes bytes that no row accounts for: clean files no stored or released transfer references, and
    /// quarantine files of transfers that were never recorded (a crash between storing and committing), once
    /// older than ``orphanGrace``.
    ///
    /// - Returns: the removed paths.
    public func removeOrphanedBytes() async throws -> [String] {
        let store = self.store
        let grace = self.orphanGrace
        return try await self.ledger.withLiveContent { live in
            let now = Date()
            let clean = Set(live.cleanHashes.map { store.cleanPath(sha256: $0) })
            let quarantined = Set(live.quarantinedIds.map { store.quarantinePath(transferId: $0) })
            var removed: [String] = []
            for path in FileStore.regularFiles(under: store.filesDirectory) where !clean.contains(path) && FileStore.age(of: path, now: now) >= grace {
                try FileManager.default.removeItem(atPath: path)
                removed.append(path)
            }
            for path in FileStore.regularFiles(under: store.quarantineDirectory)
            where !quarantined.contains(path) && !(path as NSString).lastPathComponent.hasPrefix(".") && FileStore.age(of: path, now: now) >= grace {
                try FileManager.default.removeItem(atPath: path)
                removed.append(path)
            }
            return removed
        }
    }
}
