public import Foundation

extension Broker {
    /// A transfer and its recipients as the IM server that handed it off sees it.
    ///
    /// - Throws: ``BrokerError/transferNotFound(_:)`` when unknown or handed off by another server.
    public func transfer(id: String, server: String?) async throws -> (TransferRecord, [String]) {
        guard let found = try await self.transfers.transfer(id: id, server: server) else {
            throw BrokerError.transferNotFound(id)
        }
        return found
    }

    /// Mints a fresh download URL for one recipient of a downloadable transfer.
    public func issueDownload(transferId: String, recipient: String, ttlSeconds: Int?, server: String?) async throws -> DownloadGrant {
        try await self.transfers.issueDownload(transferId: transferId, recipient: recipient, ttlSeconds: ttlSeconds, server: server)
    }

    /// The sender's IM server retracts a transfer: state `deleted`, bytes removed unless shared. A quarantined
    /// transfer belongs to the administrators (``BrokerError/heldInQuarantine(id:)``).
    public func retract(transferId: String, server: String) async throws {
        try await self.transfers.delete(transferId: transferId, actor: "server:\(server)", server: server, reason: "retracted by the sender")
    }

    /// What `/readyz` reports: the ledger answers, and which signatures are loaded.
    public struct Readiness: Sendable, Encodable {
        /// Always `ready` (an unreadable ledger throws).
        public var status = "ready"
        /// Signatures loaded.
        public var signatures: Int
        /// Their version, part of the verdict cache's key.
        public var signatureVersion: String
        /// The ledger's schema version.
        public var databaseVersion: String
        /// When the serving signatures finished compiling (ISO 8601).
        public var signaturesLoadedAt: String
        /// The last reload's error; nil once one succeeds (the previous signatures keep serving meanwhile).
        public var lastReloadError: String?
    }

    /// Checks that the ledger answers and that parsers serve, and reports the loaded signatures.
    ///
    /// - Throws: ``BrokerError/unavailable(_:)`` while no parsers serve (a blocking reload compiles, or failed).
    public func readiness() async throws -> Readiness {
        let schema = try await self.ledger.schemaVersion()
        guard self.inspector.isServing else {
            throw BrokerError.unavailable(
                "no signatures serve: a blocking reload is compiling"
                    + (self.inspector.lastReloadError.map { " or failed (\($0)); fix the signature files" } ?? "")
            )
        }
        let signatures = self.inspector.signatures
        return Readiness(
            signatures: signatures.signatureCount,
            signatureVersion: signatures.version,
            databaseVersion: schema,
            signaturesLoadedAt: AuditLog.timestamp(self.inspector.signaturesLoadedAt),
            lastReloadError: self.inspector.lastReloadError
        )
    }
}
