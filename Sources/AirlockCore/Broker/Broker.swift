import Crypto
public import Foundation
import GRDB
import JWTKit
import LibMagic
public import Logging
public import NIOCore
public import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

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
            // libclamav's per-scan directories go to var/scanning: private (0700), on the store's filesystem (not
            // /tmp, where creating one per scan cost more than scanning a small file), and emptied at start-up, so
            // nothing it extracted outlives a crash.
            let inspector = try await Inspector.start(configuration: configuration, temporaryDirectory: store.scanningDirectory, logger: logger)
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
        guard !address.isEmpty, address.utf8.count <= 3071 else { return false }
        // Printable ASCII, the usual case, is valid without looking up Unicode properties.
        if address.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) { return true }
        return !address.unicodeScalars.contains { $0.properties.generalCategory == .control || $0 == " " }
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
            try VerdictCacheRecord.fetchWithCachedStatement(db, sha256: sha256, signatureVersion: signatureVersion)
        }
        if let cached {
            await inProgress?.cancel()
            (detectedType, typeDescription, verdict) = self.decide(cached: cached, declaredType: handOff.declaredType)
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

        let record = self.makeRecord(
            id: transferId,
            handOff,
            filename: filename,
            size: size,
            sha256: sha256,
            detectedType: detectedType,
            typeDescription: typeDescription,
            verdict: verdict,
            signatureVersion: signatureVersion
        )
        let recipients = Array(Set(handOff.recipients)).sorted()
        let (grants, issuances) = try self.mintDownloads(for: record, recipients: recipients)
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
        self.logReceived(record, cached: cached != nil)
        return (record, recipients, grants)
    }

    /// Uploads up to this size are received in memory, then hashed, inspected, stored and recorded in one step on
    /// a scan worker (``receive(_:contents:slot:)``): for them, thread hops would cost more than the work. The
    /// worker is held until the ledger's write lock is free, so a long admin transaction delays scans too.
    public static let inMemoryLimit = 64 << 10

    /// Inspects an upload received whole in memory (at most ``inMemoryLimit`` bytes, though any size works),
    /// stores or quarantines it and records the transfer, as ``receive(_:staging:slot:inProgress:)`` does for a
    /// staging file.
    ///
    /// - Parameter slot: an XEP-0363 upload path to claim for this transfer; if another transfer holds it,
    ///   ``BrokerError/slotTaken(_:)`` is thrown and nothing is kept.
    public func receive(
        _ handOff: HandOff,
        contents: ByteBuffer,
        slot: String? = nil
    ) async throws -> (TransferRecord, [String], [Ledger.DownloadGrant]) {
        let filename = try Self.validate(handOff)
        do {
            return try await self.inspector.runOnWorker {
                try contents.withUnsafeReadableBytes { bytes in
                    try self.receiveSynchronously(handOff, filename: filename, bytes: bytes, slot: slot)
                }
            }
        } catch is NIOThreadPoolError.ThreadPoolInactive {
            throw BrokerError.unavailable("the broker is shutting down and takes no more uploads: send the file again")
        }
    }

    /// ``receive(_:contents:slot:)`` on the calling thread: every step blocks, the ledger included.
    private func receiveSynchronously(
        _ handOff: HandOff,
        filename: String,
        bytes: UnsafeRawBufferPointer,
        slot: String?
    ) throws -> (TransferRecord, [String], [Ledger.DownloadGrant]) {
        let sha256 = SHA256.hash(data: bytes).hexString
        let signatureVersion = self.inspector.signatures.version
        let cached = try self.database.writer.read { db in
            try VerdictCacheRecord.fetchWithCachedStatement(db, sha256: sha256, signatureVersion: signatureVersion)
        }
        let detectedType: String?
        let typeDescription: String?
        let verdict: Verdict
        if let cached {
            (detectedType, typeDescription, verdict) = self.decide(cached: cached, declaredType: handOff.declaredType)
        } else {
            let report = self.inspector.inspectSynchronously(bytes: bytes, declaredType: handOff.declaredType, sha256: sha256)
            (detectedType, typeDescription, verdict) = (report.detectedType?.mimeType, report.detectedType?.description, report.verdict)
        }
        let record = self.makeRecord(
            id: UUID().uuidString.lowercased(),
            handOff,
            filename: filename,
            size: Int64(bytes.count),
            sha256: sha256,
            detectedType: detectedType,
            typeDescription: typeDescription,
            verdict: verdict,
            signatureVersion: signatureVersion
        )
        let recipients = Array(Set(handOff.recipients)).sorted()
        let (grants, issuances) = try self.mintDownloads(for: record, recipients: recipients)

        // The bytes take the same way to the store as a streamed upload's: a staging file, synced only when it
        // becomes new clean content, renamed into the store inside the ledger's transaction.
        let store = self.store
        let stagingPath = store.newStagingPath()
        let synced = verdict.isClean && !store.hasClean(sha256: sha256)
        do {
            try FileStore.writeStagingFile(stagingPath, bytes: bytes, sync: synced)
            if !verdict.isClean {
                try store.quarantine(stagingPath: stagingPath, transferId: record.id)
            }
            try self.database.writer.write { db in
                try self.insert(
                    record,
                    recipients: recipients,
                    issuances: issuances,
                    verdict: verdict,
                    cached: cached != nil,
                    stagingPath: stagingPath,
                    slot: slot,
                    synced: synced,
                    db
                )
            }
        } catch {
            unlink(stagingPath)
            if !verdict.isClean {
                try? store.removeQuarantined(transferId: record.id)
            }
            throw error
        }
        self.logReceived(record, cached: cached != nil)
        return (record, recipients, grants)
    }

    /// The type and verdict of bytes these signatures found clean before: only the policy runs again, since the
    /// declared type may differ.
    private func decide(cached: VerdictCacheRecord, declaredType: String?) -> (String?, String?, Verdict) {
        let verdict: Verdict =
            self.inspector.policy.blockReason(declaredType: declaredType, detectedType: cached.detectedType)
            .map { .blocked(reason: $0) } ?? .clean
        return (cached.detectedType, cached.typeDescription.isEmpty ? nil : cached.typeDescription, verdict)
    }

    private func makeRecord(
        id: String,
        _ handOff: HandOff,
        filename: String,
        size: Int64,
        sha256: String,
        detectedType: String?,
        typeDescription: String?,
        verdict: Verdict,
        signatureVersion: String
    ) -> TransferRecord {
        let now = self.now()
        return TransferRecord(
            id: id,
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
    }

    /// One download token per recipient of a clean transfer, recorded in the transfer's own transaction.
    private func mintDownloads(for record: TransferRecord, recipients: [String]) throws -> ([Ledger.DownloadGrant], [TokenIssuanceRecord]) {
        guard record.state == .stored else { return ([], []) }
        var grants: [Ledger.DownloadGrant] = []
        var issuances: [TokenIssuanceRecord] = []
        for recipient in recipients {
            let (grant, issuance) = try self.ledger.mintDownload(transferId: record.id, recipient: recipient, now: record.createdAt)
            grants.append(grant)
            issuances.append(issuance)
        }
        return (grants, issuances)
    }

    private func logReceived(_ record: TransferRecord, cached: Bool) {
        self.logger.info(
            "transfer received",
            metadata: [
                "transfer": "\(record.id)", "server": "\(record.server)", "size": "\(record.size)",
                "verdict": "\(record.verdict.rawValue)", "cached": "\(cached)",
            ]
        )
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
        try await self.database.writer.write { db in
            try self.insert(
                record,
                recipients: recipients,
                issuances: issuances,
                verdict: verdict,
                cached: cached,
                stagingPath: staging.path,
                slot: slot,
                synced: synced,
                db
            )
        }
    }

    /// The body of the transaction that records a transfer (and moves its clean bytes into the store).
    private func insert(
        _ record: TransferRecord,
        recipients: [String],
        issuances: [TokenIssuanceRecord],
        verdict: Verdict,
        cached: Bool,
        stagingPath: String,
        slot: String?,
        synced: Bool,
        _ db: Database
    ) throws {
        let store = self.store
        let (transferId, sha256, size, now) = (record.id, record.sha256, record.size, record.createdAt)
        if let slot {
            guard try UploadSlotRecord.fetchOne(db, key: slot) == nil else { throw BrokerError.slotTaken(slot) }
        }
        if verdict.isClean {
            // Inside the write transaction, so a concurrent delete of the same content cannot interleave.
            try store.storeClean(stagingPath: stagingPath, sha256: sha256, synced: synced)
            if !cached, let detectedType = record.detectedType {
                try VerdictCacheRecord(
                    sha256: sha256,
                    signatureVersion: record.signatureVersion,
                    detectedType: detectedType,
                    typeDescription: record.typeDescription ?? "",
                    createdAt: now
                ).saveWithCachedStatement(db)
            }
        }
        try record.insertWithCachedStatement(db)
        for recipient in recipients {
            try RecipientRecord(transferId: transferId, recipient: recipient).insertWithCachedStatement(db)
        }
        for issuance in issuances {
            try issuance.insertWithCachedStatement(db)
        }
        var details = ["sha256": sha256, "size": String(size), "verdict": verdict.kind.rawValue, "state": record.state.rawValue]
        details["signature"] = verdict.signature
        details["reason"] = verdict.reason
        if let slot {
            try UploadSlotRecord(path: slot, transferId: transferId, createdAt: now).insertWithCachedStatement(db)
            details["slot"] = slot
        }
        try AuditLog.append(db, at: now, actor: "server:\(record.server)", action: "transfer.created", transferId: transferId, details: details)
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
