public import Foundation
import GRDB
import JWTKit
import LibMagic
public import Logging
public import NIOPosix

/// The broker's domain logic, independent of HTTP: receive, inspect, store and record transfers; mint and
/// check download tokens; delete.
public final class Broker: Sendable {
    /// The configuration it runs on.
    public let configuration: AirlockConfiguration
    /// The inspection pipeline.
    public let inspector: Inspector
    /// The ledger.
    public let database: AppDatabase
    /// The bytes on disk.
    public let store: FileStore
    /// Download tokens.
    public var tokens: DownloadTokens { self.ledger.tokens }
    /// Queries, token issuance and deletion, shared with the admin commands.
    public let ledger: Ledger
    /// Threads for blocking file I/O.
    public let threadPool: NIOThreadPool
    /// The clock (injectable for tests).
    public let now: @Sendable () -> Date
    private let logger: Logger

    private init(
        configuration: AirlockConfiguration,
        inspector: Inspector,
        database: AppDatabase,
        store: FileStore,
        ledger: Ledger,
        threadPool: NIOThreadPool,
        now: @escaping @Sendable () -> Date,
        logger: Logger
    ) {
        self.configuration = configuration
        self.inspector = inspector
        self.database = database
        self.store = store
        self.ledger = ledger
        self.threadPool = threadPool
        self.now = now
        self.logger = logger
    }

    /// Prepares the store (emptying staging), opens and migrates the ledger, loads signatures and token keys.
    public static func start(
        configuration: AirlockConfiguration,
        logger: Logger,
        now: @escaping @Sendable () -> Date = { Date() }
    ) async throws -> Broker {
        let threadPool = NIOThreadPool(numberOfThreads: max(2, ProcessInfo.processInfo.activeProcessorCount))
        threadPool.start()
        do {
            let store = FileStore(configuration.storage)
            let (database, removed) = try await threadPool.runIfActive {
                let removed = try store.prepare()
                return (try AppDatabase(path: store.databasePath), removed)
            }
            if removed > 0 {
                logger.notice("removed stale staging files left by an interrupted run", metadata: ["count": "\(removed)"])
            }
            let inspector = try await Inspector.start(configuration: configuration, logger: logger)
            let tokens = await DownloadTokens(configuration.tokens)
            let ledger = Ledger(configuration: configuration, database: database, store: store, tokens: tokens, now: now)
            let orphans = try await ledger.removeOrphanedBytes()
            if !orphans.isEmpty {
                logger.notice("removed bytes that no transfer accounts for (left by an interrupted run)", metadata: ["count": "\(orphans.count)"])
            }
            return Broker(
                configuration: configuration,
                inspector: inspector,
                database: database,
                store: store,
                ledger: ledger,
                threadPool: threadPool,
                now: now,
                logger: logger
            )
        } catch {
            try? await threadPool.shutdownGracefully()
            throw error
        }
    }

    /// Stops the worker threads.
    public func shutdown() async throws {
        try await self.inspector.shutdown()
        try await self.threadPool.shutdownGracefully()
    }

    // MARK: Hand-off

    /// What an IM server says about a file it hands off.
    public struct HandOff: Sendable {
        /// The IM server's configured name.
        public var server: String
        /// The sender's address.
        public var sender: String
        /// The recipients' addresses.
        public var recipients: [String]
        /// The filename as given.
        public var filename: String
        /// The declared `Content-Type`.
        public var declaredType: String?
        /// Whether recipients must be named (XEP-0363 uploads are capability URLs without recipients).
        public var requiresRecipients: Bool

        /// Creates a hand-off description.
        public init(
            server: String,
            sender: String,
            recipients: [String],
            filename: String,
            declaredType: String?,
            requiresRecipients: Bool = true
        ) {
            self.server = server
            self.sender = sender
            self.recipients = recipients
            self.filename = filename
            self.declaredType = declaredType
            self.requiresRecipients = requiresRecipients
        }
    }

    /// Checks a hand-off's parameters before any byte is read.
    ///
    /// - Returns: the filename to serve (the last path component).
    /// - Throws: ``BrokerError/invalidRequest(_:)``.
    public static func validate(_ handOff: HandOff) throws -> String {
        guard Self.isValidAddress(handOff.sender) else {
            throw BrokerError.invalidRequest("sender is missing or invalid: give the sender's address as ?sender=")
        }
        guard !handOff.recipients.isEmpty || !handOff.requiresRecipients else {
            throw BrokerError.invalidRequest("no recipient: give each recipient's address as ?recipient= (repeatable)")
        }
        guard handOff.recipients.count <= 1000 else {
            throw BrokerError.invalidRequest("too many recipients (at most 1000)")
        }
        for recipient in handOff.recipients where !Self.isValidAddress(recipient) {
            throw BrokerError.invalidRequest("recipient \"\(recipient.prefix(64))\" is invalid")
        }
        return try Filename.served(from: handOff.filename)
    }

    private static func isValidAddress(_ address: String) -> Bool {
        !address.isEmpty && address.utf8.count <= 3071
            && !address.unicodeScalars.contains { $0.properties.generalCategory == .control || $0 == " " }
    }

    /// Inspects a fully received staging file, stores or quarantines it and records the transfer.
    ///
    /// The staging file is consumed: moved into the store, encrypted into the quarantine, or removed.
    ///
    /// - Parameter slot: an XEP-0363 upload path to claim for this transfer; if another transfer holds it,
    ///   ``BrokerError/slotTaken(_:)`` is thrown and nothing is kept.
    ///
    /// - Parameter inProgress: an inspection started while the upload was received
    ///   (``Inspector/beginInspection(of:declaredType:)``); it is used, or cancelled when the verdict cache answers.
    public func receive(
        _ handOff: HandOff,
        staging: StagingFile,
        slot: String? = nil,
        inProgress: InspectionInProgress? = nil
    ) async throws -> (TransferRecord, [String], [Ledger.DownloadGrant]) {
        let filename: String
        let size: Int64
        let sha256: String
        do {
            filename = try Self.validate(handOff)
            (size, sha256) = try await staging.finish()
        } catch {
            await inProgress?.cancel()
            throw error
        }
        let transferId = UUID().uuidString.lowercased()
        let signatureVersion = self.inspector.signatures.version

        let detectedType: String?
        let typeDescription: String?
        let verdict: Verdict
        let cached = try await self.database.writer.read { db in
            try VerdictCacheRecord.fetchOne(db, key: ["sha256": sha256, "signatureVersion": signatureVersion])
        }
        if let cached {
            // Identical bytes were found clean by these signatures: only the policy needs to run again, since the
            // declared type may differ.
            await inProgress?.cancel()
            detectedType = cached.detectedType
            typeDescription = cached.typeDescription.isEmpty ? nil : cached.typeDescription
            verdict =
                self.inspector.policy.blockReason(declaredType: handOff.declaredType, detectedType: cached.detectedType)
                .map { .blocked(reason: $0) } ?? .clean
        } else {
            let report: InspectionReport
            if let early = await inProgress?.report(), early.size == size {
                report = early
            } else {
                report = await self.inspector.inspect(fileAt: staging.path, declaredType: handOff.declaredType, sha256: sha256)
            }
            detectedType = report.detectedType?.mimeType
            typeDescription = report.detectedType?.description
            verdict = report.size == size ? report.verdict : .unscannable(reason: "content changed while it was inspected")
        }

        let now = self.now()
        let record = TransferRecord(
            id: transferId,
            server: handOff.server,
            sender: handOff.sender,
            filename: filename,
            originalFilename: handOff.filename,
            declaredType: handOff.declaredType,
            detectedType: detectedType,
            typeDescription: typeDescription,
            size: size,
            sha256: sha256,
            verdict: verdict.kind,
            signature: verdict.signature,
            reason: verdict.reason,
            state: verdict.isClean ? .stored : .quarantined,
            signatureVersion: signatureVersion,
            createdAt: now,
            updatedAt: now
        )
        let recipients = Array(Set(handOff.recipients)).sorted()
        // Each recipient's download token is recorded in the same transaction as the transfer.
        var grants: [Ledger.DownloadGrant] = []
        var issuances: [TokenIssuanceRecord] = []
        if verdict.isClean {
            for recipient in recipients {
                let (grant, issuance) = try await self.ledger.mintDownload(transferId: transferId, recipient: recipient, now: now)
                grants.append(grant)
                issuances.append(issuance)
            }
        }
        let store = self.store
        // New clean content is synced before the transaction (a repeat of stored bytes needs no sync: they are
        // dropped); if the content appears or vanishes meanwhile, storeClean syncs inside when it has to.
        var synced = false
        if verdict.isClean, !store.hasClean(sha256: sha256) {
            let path = staging.path
            try await self.threadPool.runIfActive { try FileStore.syncFile(path) }
            synced = true
        }
        if !verdict.isClean {
            // Encryption can take a while: do it before taking the ledger's write lock.
            try await self.threadPool.runIfActive {
                try store.quarantine(stagingPath: staging.path, transferId: transferId)
            }
        }
        do {
            try await self.record(
                record,
                recipients: recipients,
                issuances: issuances,
                verdict: verdict,
                cached: cached != nil,
                staging: staging,
                slot: slot,
                synced: synced
            )
        } catch {
            if !verdict.isClean {
                try? store.removeQuarantined(transferId: transferId)
            }
            throw error
        }
        self.logger.info(
            "transfer received",
            metadata: [
                "transfer": "\(transferId)", "server": "\(handOff.server)", "size": "\(size)", "verdict": "\(verdict.kind.rawValue)",
                "cached": "\(cached != nil)",
            ]
        )
        return (record, recipients, grants)
    }

    /// Moves clean bytes into the store and writes the transfer, its recipients, their download tokens, slot and
    /// audit entry, all in one write transaction.
    private func record(
        _ record: TransferRecord,
        recipients: [String],
        issuances: [TokenIssuanceRecord],
        verdict: Verdict,
        cached: Bool,
        staging: StagingFile,
        slot: String?,
        synced: Bool
    ) async throws {
        let store = self.store
        let (transferId, sha256, size, now) = (record.id, record.sha256, record.size, record.createdAt)
        try await self.database.writer.write { db in
            if let slot {
                guard try UploadSlotRecord.fetchOne(db, key: slot) == nil else { throw BrokerError.slotTaken(slot) }
            }
            if verdict.isClean {
                // Inside the write transaction, so a concurrent delete of the same content cannot interleave.
                try store.storeClean(stagingPath: staging.path, sha256: sha256, synced: synced)
                if !cached, let detectedType = record.detectedType {
                    try VerdictCacheRecord(
                        sha256: sha256,
                        signatureVersion: record.signatureVersion,
                        detectedType: detectedType,
                        typeDescription: record.typeDescription ?? "",
                        createdAt: now
                    ).save(db)
                }
            }
            try record.insert(db)
            for recipient in recipients {
                try RecipientRecord(transferId: transferId, recipient: recipient).insert(db)
            }
            for issuance in issuances {
                try issuance.insert(db)
            }
            var details = ["sha256": sha256, "size": String(size), "verdict": verdict.kind.rawValue, "state": record.state.rawValue]
            details["signature"] = verdict.signature
            details["reason"] = verdict.reason
            if let slot {
                try UploadSlotRecord(path: slot, transferId: transferId, createdAt: now).insert(db)
                details["slot"] = slot
            }
            try AuditLog.append(db, at: now, actor: "server:\(record.server)", action: "transfer.created", transferId: transferId, details: details)
        }
    }

    /// What a verified download token gives access to.
    public struct AuthorizedDownload: Sendable {
        /// The transfer.
        public var transfer: TransferRecord
        /// The recipient the token was minted for.
        public var recipient: String
        /// The path of the clean bytes.
        public var path: String
    }

    /// Verifies a download token and the transfer's state; `consume` marks a single-use token used.
    public func authorizeDownload(token: String, consume: Bool) async throws -> AuthorizedDownload {
        let claims: DownloadTokenClaims
        do {
            claims = try await self.tokens.verify(token, now: self.now())
        } catch .expired {
            throw BrokerError.tokenExpired("the download link expired: ask for a new one")
        } catch {
            throw BrokerError.invalidToken
        }
        guard let (record, recipients) = try await self.ledger.transfer(id: claims.tid) else {
            throw BrokerError.transferNotFound(claims.tid)
        }
        guard recipients.contains(claims.sub.value) else {
            throw BrokerError.notARecipient(claims.sub.value)
        }
        switch record.state {
        case .deleted, .purged:
            throw BrokerError.gone(id: record.id, state: record.state)
        case .quarantined:
            throw BrokerError.quarantined(id: record.id, verdict: record.fullVerdict)
        case .stored, .released:
            break
        }
        if self.configuration.tokens.singleUse, consume {
            let now = self.now()
            let used = try await self.database.writer.write { db in
                try TokenIssuanceRecord.filter(Column("tokenId") == claims.jti.value && Column("usedAt") == nil)
                    .updateAll(db, Column("usedAt").set(to: now))
            }
            guard used == 1 else {
                throw BrokerError.tokenExpired("this single-use download link was already used: ask for a new one")
            }
        }
        return AuthorizedDownload(transfer: record, recipient: claims.sub.value, path: self.store.cleanPath(sha256: record.sha256))
    }

    /// Records one download attempt.
    public func recordDownload(_ download: DownloadRecord) async {
        do {
            try await self.database.writer.write { db in
                var row = download
                try row.insert(db)
            }
        } catch {
            self.logger.error("cannot record a download", metadata: ["transfer": "\(download.transferId)", "error": "\(error)"])
        }
    }

}
