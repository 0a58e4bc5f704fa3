public import Foundation
import GRDB
import Synchronization

/// The embedded ledger: one SQLite database in WAL mode (GRDB), migrated at open (``AppDatabase``).
public struct SQLiteLedger: Ledger, LocalVerdictCache {
    /// The database.
    let database: AppDatabase
    /// This node's `node.id`, added to every audit entry it appends.
    let node: String?
    /// Which webhooks get which events.
    public let notifications: NotificationRouter

    /// Opens (creating if needed, 0600) the ledger at `path` and migrates it; `node` names this node in the audit
    /// entries it appends; `notifications` routes the events it publishes.
    public init(path: String, node: String? = nil, notifications: NotificationRouter = NotificationRouter()) throws {
        self.database = try AppDatabase(path: path)
        self.verdictReaders = VerdictCacheReaders(path: path)
        self.node = node
        self.notifications = notifications
    }

    /// Read-only connections for ``cachedVerdictBlocking(sha256:signatureVersion:)``.
    let verdictReaders: VerdictCacheReaders

    var writer: any DatabaseWriter { self.database.writer }

    // MARK: Reads

    public func schemaVersion() async throws -> String {
        try await self.database.schemaVersion()
    }

    public func transfer(id: String) async throws -> (TransferRecord, [String])? {
        try await self.writer.read { db in
            guard let record = try TransferRecord.fetchOne(db, key: id) else { return nil }
            return (record, try Self.recipients(of: id, db))
        }
    }

    public func transfer(inSlot path: String) async throws -> TransferRecord? {
        try await self.writer.read { db in
            guard let slot = try UploadSlotRecord.fetchOne(db, key: path) else { return nil }
            return try TransferRecord.fetchOne(db, key: slot.transferId)
        }
    }

    public func cachedVerdict(sha256: String, signatureVersion: String) async throws -> VerdictCacheRecord? {
        try await self.writer.read { db in
            try VerdictCacheRecord.fetchWithCachedStatement(db, sha256: sha256, signatureVersion: signatureVersion)
        }
    }

    public var localVerdictCache: (any LocalVerdictCache)? { self }

    public func cachedVerdictBlocking(sha256: String, signatureVersion: String) throws -> VerdictCacheRecord? {
        try self.verdictReaders.read { db in
            try VerdictCacheRecord.fetchWithCachedStatement(db, sha256: sha256, signatureVersion: signatureVersion)
        }
    }

    public func transfers(_ filter: TransferFilter) async throws -> [TransferSummary] {
        try await self.writer.read { db in
            var request = TransferRecord.all()
            if let sender = filter.sender { request = request.filter(Column("sender") == sender) }
            if let since = filter.since { request = request.filter(Column("createdAt") >= since) }
            if let verdict = filter.verdict { request = request.filter(Column("verdict") == verdict) }
            if let states = filter.states { request = request.filter(states.contains(Column("state"))) }
            if let recipient = filter.recipient {
                request = request.filter(sql: "id IN (SELECT transferId FROM transferRecipient WHERE recipient = ?)", arguments: [recipient])
            }
            let records = try request.order(Column("createdAt").desc, Column("id")).limit(filter.limit).fetchAll(db)
            return try records.map { TransferSummary(record: $0, recipients: try Self.recipients(of: $0.id, db)) }
        }
    }

    public func transfers(inStates states: [TransferState]) async throws -> [TransferRecord] {
        try await self.writer.read { db in
            try TransferRecord.filter(states.contains(Column("state"))).order(Column("createdAt"), Column("id")).fetchAll(db)
        }
    }

    public func purgeCandidates(cleanBefore: Date, quarantineBefore: Date) async throws -> [TransferRecord] {
        try await self.writer.read { db in
            try TransferRecord
                .filter(
                    ([TransferState.stored, .released].contains(Column("state")) && Column("createdAt") < cleanBefore)
                        || (Column("state") == TransferState.quarantined && Column("createdAt") < quarantineBefore)
                )
                .order(Column("createdAt"))
                .fetchAll(db)
        }
    }

    public func detail(id: String) async throws -> TransferDetail? {
        try await self.writer.read { db -> TransferDetail? in
            guard let record = try TransferRecord.fetchOne(db, key: id) else { return nil }
            let audit = try AuditEntry.filter(Column("transferId") == id).order(Column("id")).fetchAll(db)
            let downloads = try DownloadRecord.filter(Column("transferId") == id).order(Column("id")).fetchAll(db)
            return TransferDetail(
                summary: TransferSummary(record: record, recipients: try Self.recipients(of: id, db)),
                audit: audit,
                downloads: downloads
            )
        }
    }

    public func auditEntries(transferId: String?, limit: Int?) async throws -> [AuditEntry] {
        try await self.writer.read { db in
            var request = AuditEntry.order(Column("id"))
            if let transferId { request = request.filter(Column("transferId") == transferId) }
            if let limit { request = request.order(Column("id").desc).limit(limit) }
            let entries = try request.fetchAll(db)
            return limit == nil ? entries : entries.reversed()
        }
    }

    public func auditChain() async throws -> AuditChain {
        try await self.writer.read { db in
            let entries = try AuditEntry.order(Column("id")).fetchAll(db)
            let unrecorded = try String.fetchAll(
                db,
                sql: """
                    SELECT id FROM transfer WHERE id NOT IN
                    (SELECT transferId FROM audit_log WHERE action = 'transfer.created' AND transferId IS NOT NULL)
                    ORDER BY createdAt
                    """
            )
            return AuditChain(entries: entries, transfersWithoutCreation: unrecorded)
        }
    }

    private static func recipients(of transferId: String, _ db: Database) throws -> [String] {
        try RecipientRecord.filter(Column("transferId") == transferId).order(Column("recipient")).fetchAll(db).map(\.recipient)
    }

    // MARK: Writes

    public func recordHandOff(_ entry: HandOffEntry, inTransaction: @escaping @Sendable () throws -> Void) async throws {
        try await self.writer.write { db in
            try Self.insert(entry, db, node: self.node, inTransaction: inTransaction)
            try self.publish(entry, db)
        }
        if !entry.notifications.isEmpty { self.notifications.enqueued() }
    }

    /// The outbox rows of a hand-off's events, inside its transaction.
    func publish(_ entry: HandOffEntry, _ db: Database) throws {
        guard !entry.notifications.isEmpty else { return }
        let subject = NotificationSubject(record: entry.transfer, recipients: entry.recipients, downloads: [])
        try self.publish(entry.notifications, db, subject: subject)
    }

    /// The rows of one hand-off, written through cached statements (the hand-off's speed depends on it).
    static func insert(_ entry: HandOffEntry, _ db: Database, node: String?, inTransaction: () throws -> Void) throws {
        let transfer = entry.transfer
        if let slot = entry.slot {
            guard try UploadSlotRecord.fetchOne(db, key: slot) == nil else { throw BrokerError.slotTaken(slot) }
        }
        try Self.enforceQuota(of: entry, db)
        try inTransaction()
        if let cached = entry.cachedVerdict {
            try cached.saveWithCachedStatement(db)
        }
        try transfer.insertWithCachedStatement(db)
        for recipient in entry.recipients {
            try RecipientRecord(transferId: transfer.id, recipient: recipient).insertWithCachedStatement(db)
        }
        for issuance in entry.issuances {
            try issuance.insertWithCachedStatement(db)
        }
        if let slot = entry.slot {
            try UploadSlotRecord(path: slot, transferId: transfer.id, createdAt: transfer.createdAt).insertWithCachedStatement(db)
        }
        try AuditLog.append(
            db,
            at: transfer.createdAt,
            actor: "server:\(transfer.server)",
            action: "transfer.created",
            transferId: transfer.id,
            details: entry.auditDetails.stamped(node: node)
        )
    }

    public func recordIssuance(_ issuance: TokenIssuanceRecord, audit: AuditEvent?) async throws {
        try await self.writer.write { db in
            try issuance.insert(db)
            if let audit { try self.append(audit, db) }
        }
    }

    public func consumeToken(id tokenId: String, at date: Date) async throws -> Bool {
        try await self.writer.write { db in
            try TokenIssuanceRecord.filter(Column("tokenId") == tokenId && Column("usedAt") == nil)
                .updateAll(db, Column("usedAt").set(to: date)) == 1
        }
    }

    public func recordDownload(_ download: DownloadRecord) async throws {
        try await self.writer.write { db in
            var row = download
            try row.insert(db)
        }
    }

    public func appendAudit(_ event: AuditEvent) async throws {
        try await self.writer.write { db in try self.append(event, db) }
    }

    @discardableResult
    public func changeTransfer(
        id: String,
        event: AuditEvent,
        notify: @escaping @Sendable (TransferRecord) -> [NotificationEvent],
        _ decide: @escaping @Sendable (TransferRecord) throws -> TransferChange
    ) async throws -> TransferRecord? {
        let changed = try await self.writer.write { db -> (TransferRecord, published: Bool)? in
            guard let current = try TransferRecord.fetchOne(db, key: id) else { return nil }
            var event = event
            switch try decide(current) {
            case .skip:
                return nil
            case .keepState:
                break
            case .setState(let state):
                try TransferRecord.filter(key: id).updateAll(db, Column("state").set(to: state), Column("updatedAt").set(to: event.at))
                event.details["previousState"] = event.details["previousState"] ?? current.state.rawValue
            }
            try self.append(event, db)
            let events = notify(current)
            try self.publish(events, db)
            return (current, !events.isEmpty)
        }
        if changed?.published == true { self.notifications.enqueued() }
        return changed?.0
    }

    public func removeUnsharedContent(sha256: String, _ remove: @escaping @Sendable () throws -> Void) async throws {
        try await self.writer.write { db in
            let sharing = try TransferRecord.filter(Column("sha256") == sha256 && [TransferState.stored, .released].contains(Column("state")))
                .fetchCount(db)
            if sharing == 0 { try remove() }
        }
    }

    public func withLiveContent<Result: Sendable>(_ body: @escaping @Sendable (LiveContent) throws -> Result) async throws -> Result {
        try await self.writer.write { db in
            let live = LiveContent(
                cleanHashes: Set(try String.fetchAll(db, sql: "SELECT DISTINCT sha256 FROM transfer WHERE state IN ('stored', 'released')")),
                quarantinedIds: Set(try String.fetchAll(db, sql: "SELECT id FROM transfer WHERE state = 'quarantined'"))
            )
            return try body(live)
        }
    }

    /// Nothing to release: the pool closes with its last reference.
    public func close() async {}

    func append(_ event: AuditEvent, _ db: Database) throws {
        try AuditLog.append(
            db,
            at: event.at,
            actor: event.actor,
            action: event.action,
            transferId: event.transferId,
            details: event.details.stamped(node: self.node)
        )
    }
}

// MARK: Copying a whole ledger

extension SQLiteLedger {
    public func rowCounts() async throws -> LedgerCounts {
        try await self.writer.read { db in try Self.rowCounts(db) }
    }

    private static func rowCounts(_ db: Database) throws -> LedgerCounts {
        LedgerCounts(
            transfers: try TransferRecord.fetchCount(db),
            recipients: try RecipientRecord.fetchCount(db),
            tokenIssuances: try TokenIssuanceRecord.fetchCount(db),
            downloads: try DownloadRecord.fetchCount(db),
            uploadSlots: try UploadSlotRecord.fetchCount(db),
            verdictCache: try VerdictCacheRecord.fetchCount(db),
            auditLog: try AuditEntry.fetchCount(db),
            notificationOutbox: try OutboxRecord.fetchCount(db)
        )
    }

    public func exportSnapshot() async throws -> LedgerSnapshot {
        try await self.writer.read { db in
            var snapshot = LedgerSnapshot()
            snapshot.transfers = try TransferRecord.order(Column("createdAt"), Column("id")).fetchAll(db)
            snapshot.recipients = try RecipientRecord.order(Column("transferId"), Column("recipient")).fetchAll(db)
            snapshot.tokenIssuances = try TokenIssuanceRecord.order(Column("issuedAt"), Column("tokenId")).fetchAll(db)
            snapshot.downloads = try DownloadRecord.order(Column("id")).fetchAll(db)
            snapshot.uploadSlots = try UploadSlotRecord.order(Column("createdAt"), Column("path")).fetchAll(db)
            snapshot.verdictCache = try VerdictCacheRecord.order(Column("createdAt"), Column("sha256"), Column("signatureVersion")).fetchAll(db)
            snapshot.auditLog = try AuditEntry.order(Column("id")).fetchAll(db)
            snapshot.notificationOutbox = try OutboxRecord.order(Column("id")).fetchAll(db)
            return snapshot
        }
    }

    public func importSnapshot(_ snapshot: LedgerSnapshot, progress: @escaping @Sendable (LedgerTable, Int) -> Void) async throws {
        try await self.writer.write { db in
            let counts = try Self.rowCounts(db)
            guard counts.isEmpty else { throw LedgerCopyError.targetNotEmpty(counts) }
            for transfer in snapshot.transfers { try transfer.insertWithCachedStatement(db) }
            progress(.transfers, snapshot.transfers.count)
            for recipient in snapshot.recipients { try recipient.insertWithCachedStatement(db) }
            progress(.recipients, snapshot.recipients.count)
            for issuance in snapshot.tokenIssuances { try issuance.insertWithCachedStatement(db) }
            progress(.tokenIssuances, snapshot.tokenIssuances.count)
            for download in snapshot.downloads {
                var row = download
                try row.insert(db)
            }
            progress(.downloads, snapshot.downloads.count)
            for slot in snapshot.uploadSlots { try slot.insertWithCachedStatement(db) }
            progress(.uploadSlots, snapshot.uploadSlots.count)
            for verdict in snapshot.verdictCache { try verdict.saveWithCachedStatement(db) }
            progress(.verdictCache, snapshot.verdictCache.count)
            for entry in snapshot.auditLog {
                // As it is: the id, time, details and both hashes of the source, not chained again.
                try db.cachedStatement(
                    sql: "INSERT INTO audit_log (id, at, actor, action, transferId, details, previousHash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                ).execute(arguments: [
                    entry.id, entry.at.databaseArgument, entry.actor, entry.action, entry.transferId, entry.details, entry.previousHash, entry.hash,
                ])
            }
            progress(.auditLog, snapshot.auditLog.count)
            for row in snapshot.notificationOutbox {
                var copy = row
                try copy.insert(db)
            }
            progress(.notificationOutbox, snapshot.notificationOutbox.count)
        }
    }
}

/// Read-only connections of their own for the verdict cache lookup every in-memory hand-off makes on a scan worker:
/// one per worker that asks at once, kept for the next. Through the pool's readers, each lookup also took a reader
/// (a barrier queue, a semaphore), checked the schema version and hopped onto the reader's queue: four times the
/// cost of the lookup. One statement needs no transaction: it reads one snapshot by itself.
final class VerdictCacheReaders: Sendable {
    private let path: String
    private let idle = Mutex<[DatabaseQueue]>([])

    init(path: String) {
        self.path = path
    }

    func read<T>(_ body: (Database) throws -> T) throws -> T {
        let queue = try self.idle.withLock { $0.popLast() } ?? self.open()
        defer { self.idle.withLock { $0.append(queue) } }
        return try queue.unsafeRead(body)
    }

    private func open() throws -> DatabaseQueue {
        var configuration = Configuration()
        configuration.readonly = true
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA temp_store = MEMORY") }
        return try DatabaseQueue(path: self.path, configuration: configuration)
    }
}
