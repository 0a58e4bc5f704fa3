public import Foundation
public import Logging
import NIOPosix
import NIOSSL
import PostgresNIO

/// The ledger on a PostgreSQL server (postgres-nio's `PostgresClient`), for several `airlock serve` nodes on one
/// ledger. Every operation is one transaction; dates are kept as milliseconds since 1970 (as SQLite's are), so the
/// audit chain's hashes are the same on both.
///
/// Serialisation across nodes: the audit chain's head is taken under a transaction-level advisory lock, so entries
/// stay strictly ordered whoever writes them; a hand-off of clean bytes and the removal of the same content take
/// an advisory lock on that content (SQLite's single writer gives both for free); start-up's orphan clean-up takes
/// the content lock of every hand-off at once. Migrations run once, under a session-level advisory lock, so nodes
/// may start together.
public final class PostgresLedger: Ledger {
    let client: PostgresClient
    let logger: Logger
    /// This node's `node.id`, added to every audit entry it appends.
    let node: String?
    /// Which webhooks get which events.
    public let notifications: NotificationRouter
    /// `client.run()`: the pool works while it runs. Started at connect and ended by ``close()``: the ledger must
    /// answer during the broker's start-up, before any service group runs.
    private let running: Task<Void, Never>
    /// Fails a transaction's BEGIN, COMMIT or ROLLBACK whose connection closed (see ``transaction(_:)``).
    let closing = ClosedConnectionWatch()

    /// The schema, one migration per version, applied in order.
    static let migrations: [(version: String, statements: [String])] = [
        (
            "pg1",
            [
                """
                CREATE TABLE transfer (
                    id TEXT PRIMARY KEY, server TEXT NOT NULL, sender TEXT NOT NULL, filename TEXT NOT NULL,
                    original_filename TEXT NOT NULL, declared_type TEXT, detected_type TEXT, type_description TEXT,
                    size BIGINT NOT NULL, sha256 TEXT NOT NULL, verdict TEXT NOT NULL, signature TEXT, reason TEXT,
                    state TEXT NOT NULL, signature_version TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
                    node TEXT)
                """,
                "CREATE INDEX transfer_sha256 ON transfer (sha256)",
                "CREATE INDEX transfer_state ON transfer (state)",
                "CREATE INDEX transfer_created_at ON transfer (created_at)",
                """
                CREATE TABLE transfer_recipient (
                    transfer_id TEXT NOT NULL REFERENCES transfer (id) ON DELETE CASCADE, recipient TEXT NOT NULL,
                    PRIMARY KEY (transfer_id, recipient))
                """,
                "CREATE INDEX transfer_recipient_recipient ON transfer_recipient (recipient)",
                """
                CREATE TABLE download (
                    id BIGSERIAL PRIMARY KEY, transfer_id TEXT NOT NULL REFERENCES transfer (id), recipient TEXT,
                    at BIGINT NOT NULL, remote_address TEXT, bytes BIGINT NOT NULL, status INTEGER NOT NULL)
                """,
                "CREATE INDEX download_transfer ON download (transfer_id)",
                """
                CREATE TABLE token_issuance (
                    token_id TEXT PRIMARY KEY, transfer_id TEXT NOT NULL REFERENCES transfer (id), recipient TEXT NOT NULL,
                    key_id TEXT NOT NULL, issued_at BIGINT NOT NULL, expires_at BIGINT NOT NULL, used_at BIGINT)
                """,
                "CREATE INDEX token_issuance_transfer ON token_issuance (transfer_id)",
                """
                CREATE TABLE verdict_cache (
                    sha256 TEXT NOT NULL, signature_version TEXT NOT NULL, detected_type TEXT NOT NULL,
                    type_description TEXT NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (sha256, signature_version))
                """,
                """
                CREATE TABLE audit_log (
                    id BIGINT PRIMARY KEY, at BIGINT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, transfer_id TEXT,
                    details TEXT NOT NULL, previous_hash TEXT NOT NULL, hash TEXT NOT NULL)
                """,
                "CREATE INDEX audit_log_transfer ON audit_log (transfer_id)",
                """
                CREATE FUNCTION airlock_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$
                """,
                """
                CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
                FOR EACH STATEMENT EXECUTE FUNCTION airlock_audit_log_append_only()
                """,
                """
                CREATE TABLE upload_slot (
                    path TEXT PRIMARY KEY, transfer_id TEXT NOT NULL REFERENCES transfer (id), created_at BIGINT NOT NULL)
                """,
                "CREATE INDEX upload_slot_transfer ON upload_slot (transfer_id)",
            ]
        ),
        (
            "pg2",
            // Scanner failures (a crash or an overrun while parsing) remembered for the content, beside clean verdicts.
            ["ALTER TABLE verdict_cache ADD COLUMN scanner_failure TEXT"]
        ),
        // Issue 16: quota usage counters (PostgresLedger+Quotas.swift) and each transfer's content class.
        ("pg3", PostgresLedger.issue16Migration),
        ("pg4", PostgresLedger.outboxMigration),
        (
            "pg5",
            // Recall (issue 15): when a retro-scan found delivered content no longer clean.
            [
                "ALTER TABLE transfer ADD COLUMN recalled_at BIGINT",
                "CREATE INDEX transfer_state_created_at ON transfer (state, created_at)",
            ]
        ),
        // transfer_state_created_at answers every lookup by state: the index on state alone only cost each insert.
        ("pg6", ["DROP INDEX IF EXISTS transfer_state"]),
        (
            "pg7",
            // Retro-scan leases (issue 14, part 3): nodes split a pass instead of each checking everything.
            [
                """
                CREATE TABLE retroscan_lease (sha256 TEXT NOT NULL, signature_version TEXT NOT NULL, node TEXT NOT NULL,
                    leased_until BIGINT NOT NULL, PRIMARY KEY (sha256, signature_version))
                """
            ]
        ),
    ]

    /// Advisory lock keys (one 64-bit space per database; these spell "airlock" and a purpose).
    enum LockKey {
        static let migrations: Int64 = 0x6169_726c_6f63_6b01
        static let auditHead: Int64 = 0x6169_726c_6f63_6b02
        static let content: Int64 = 0x6169_726c_6f63_6b03
        /// The seed of `hashtextextended(subject, seed)`, a quota subject's lock (`QuotaSubject.lockName`); content
        /// locks hash the SHA-256 with seed 0, slot locks the path with seed 1.
        static let quotaSubjectSeed: Int64 = 2
    }

    private init(client: PostgresClient, node: String?, notifications: NotificationRouter, logger: Logger) {
        self.client = client
        self.node = node
        self.notifications = notifications
        self.logger = logger
        self.running = Task { await client.run() }
    }

    /// Connects to the server `settings` name and brings its schema up to date (once, whichever node comes first).
    ///
    /// - Throws: the connection's or a migration's error.
    public static func connect(
        _ settings: AirlockConfiguration.PostgreSQL,
        node: String? = nil,
        notifications: NotificationRouter = NotificationRouter(),
        logger: Logger
    ) async throws -> PostgresLedger {
        var configuration: PostgresClient.Configuration
        if let directory = settings.socketDirectory {
            configuration = .init(
                unixSocketPath: "\(directory)/.s.PGSQL.\(settings.port)",
                username: settings.username,
                password: settings.password,
                database: settings.database
            )
        } else {
            let tls: PostgresClient.Configuration.TLS
            switch settings.sslMode {
            case .disable:
                tls = .disable
            case .require:
                var unverified = TLSConfiguration.makeClientConfiguration()
                unverified.certificateVerification = .none
                tls = .require(unverified)
            case .verifyFull:
                tls = .require(TLSConfiguration.makeClientConfiguration())
            }
            configuration = .init(
                host: settings.host ?? "localhost",
                port: settings.port,
                username: settings.username,
                password: settings.password,
                database: settings.database,
                tls: tls
            )
        }
        configuration.options.maximumConnections = settings.poolSize
        configuration.options.minimumConnections = 0
        // A commit returns once its WAL is flushed, whatever the server's, database's or role's default says: the
        // durability promise of a 201 rests on it (SECURITY.md). Sent with each connection's start-up message.
        configuration.options.additionalStartupParameters = [("synchronous_commit", "on")]
        let ledger = PostgresLedger(
            client: PostgresClient(configuration: configuration, backgroundLogger: logger),
            node: node,
            notifications: notifications,
            logger: logger
        )
        do {
            try await ledger.migrate()
        } catch {
            await ledger.close()
            throw error
        }
        return ledger
    }

    /// Stops the connection pool.
    public func close() async {
        self.running.cancel()
        await self.running.value
    }

    private func migrate() async throws {
        try await self.client.withConnection { connection in
            try await connection.query("SELECT pg_advisory_lock(\(LockKey.migrations))", logger: self.logger)
            do {
                try await connection.query(
                    "CREATE TABLE IF NOT EXISTS airlock_migration (version TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)",
                    logger: self.logger
                )
                var applied: Set<String> = []
                for try await version in try await connection.query("SELECT version FROM airlock_migration", logger: self.logger)
                    .decode(String.self)
                {
                    applied.insert(version)
                }
                for migration in Self.migrations where !applied.contains(migration.version) {
                    try await connection.withTransaction(logger: self.logger) { connection in
                        for statement in migration.statements {
                            try await connection.query(PostgresQuery(unsafeSQL: statement), logger: self.logger)
                        }
                        try await connection.query(
                            "INSERT INTO airlock_migration (version, applied_at) VALUES (\(migration.version), \(Self.milliseconds(Date())))",
                            logger: self.logger
                        )
                    }
                }
            } catch {
                _ = try? await connection.query("SELECT pg_advisory_unlock(\(LockKey.migrations))", logger: self.logger)
                throw error
            }
            try await connection.query("SELECT pg_advisory_unlock(\(LockKey.migrations))", logger: self.logger)
        }
    }

    // MARK: Reads

    public func schemaVersion() async throws -> String {
        let rows = try await self.client.query("SELECT version FROM airlock_migration ORDER BY version DESC LIMIT 1", logger: self.logger)
        for try await version in rows.decode(String.self) { return version }
        return "none"
    }

    public func transfer(id: String) async throws -> (TransferRecord, [String])? {
        try await self.client.withConnection { connection in
            guard let record = try await Self.transfers(connection, "WHERE id = \(id)", self.logger).first else { return nil }
            return (record, try await Self.recipients(of: id, connection, self.logger))
        }
    }

    public func transfer(inSlot path: String) async throws -> TransferRecord? {
        try await self.client.withConnection { connection in
            try await Self.transfers(connection, "WHERE id = (SELECT transfer_id FROM upload_slot WHERE path = \(path))", self.logger).first
        }
    }

    public func cachedVerdict(sha256: String, signatureVersion: String) async throws -> VerdictCacheRecord? {
        let rows = try await self.client.query(
            """
            SELECT detected_type, type_description, created_at, scanner_failure FROM verdict_cache
            WHERE sha256 = \(sha256) AND signature_version = \(signatureVersion)
            """,
            logger: self.logger
        )
        for try await (detectedType, typeDescription, createdAt, failure) in rows.decode((String, String, Int64, String?).self) {
            return VerdictCacheRecord(
                sha256: sha256,
                signatureVersion: signatureVersion,
                detectedType: detectedType,
                typeDescription: typeDescription,
                createdAt: Self.date(createdAt),
                scannerFailure: failure
            )
        }
        return nil
    }

    public func transfers(_ filter: TransferFilter) async throws -> [TransferSummary] {
        try await self.client.withConnection { connection in
            var condition = Condition()
            if let sender = filter.sender { try condition.add("sender = $", sender) }
            if let since = filter.since { try condition.add("created_at >= $", Self.milliseconds(since)) }
            if let verdict = filter.verdict { try condition.add("verdict = $", verdict.rawValue) }
            if let states = filter.states { try condition.add("state = ANY($)", states.map(\.rawValue)) }
            if let recipient = filter.recipient {
                try condition.add("id IN (SELECT transfer_id FROM transfer_recipient WHERE recipient = $)", recipient)
            }
            try condition.add("TRUE ORDER BY created_at DESC, id LIMIT $", Int64(filter.limit))
            let records = try await Self.transfers(connection, condition.query, self.logger)
            var summaries: [TransferSummary] = []
            for record in records {
                summaries.append(TransferSummary(record: record, recipients: try await Self.recipients(of: record.id, connection, self.logger)))
            }
            return summaries
        }
    }

    public func transfers(inStates states: [TransferState]) async throws -> [TransferRecord] {
        try await self.client.withConnection { connection in
            try await Self.transfers(connection, "WHERE state = ANY(\(states.map(\.rawValue))) ORDER BY created_at, id", self.logger)
        }
    }

    public func purgeCandidates(cleanBefore: Date, quarantineBefore: Date) async throws -> [TransferRecord] {
        try await self.client.withConnection { connection in
            try await Self.transfers(
                connection,
                """
                WHERE (state IN ('stored', 'released') AND created_at < \(Self.milliseconds(cleanBefore)))
                OR (state = 'quarantined' AND created_at < \(Self.milliseconds(quarantineBefore))) ORDER BY created_at
                """,
                self.logger
            )
        }
    }

    public func detail(id: String) async throws -> TransferDetail? {
        try await self.transaction { connection -> TransferDetail? in
            guard let record = try await Self.transfers(connection, "WHERE id = \(id)", self.logger).first else { return nil }
            let audit = try await Self.auditEntries(connection, "WHERE transfer_id = \(id) ORDER BY id", self.logger)
            var downloads: [DownloadRecord] = []
            let rows = try await connection.query(
                "SELECT id, recipient, at, remote_address, bytes, status FROM download WHERE transfer_id = \(id) ORDER BY id",
                logger: self.logger
            )
            for try await (rowId, recipient, at, remoteAddress, bytes, status) in rows.decode((Int64, String?, Int64, String?, Int64, Int32).self) {
                var download = DownloadRecord(
                    transferId: id,
                    recipient: recipient,
                    at: Self.date(at),
                    remoteAddress: remoteAddress,
                    bytes: bytes,
                    status: Int(status)
                )
                download.id = rowId
                downloads.append(download)
            }
            return TransferDetail(
                summary: TransferSummary(record: record, recipients: try await Self.recipients(of: id, connection, self.logger)),
                audit: audit,
                downloads: downloads
            )
        }
    }

    public func auditEntries(transferId: String?, limit: Int?) async throws -> [AuditEntry] {
        try await self.client.withConnection { connection in
            var condition = Condition()
            if let transferId { try condition.add("transfer_id = $", transferId) }
            guard let limit else {
                try condition.add("TRUE ORDER BY id", nil as Int64?)
                return try await Self.auditEntries(connection, condition.query, self.logger)
            }
            try condition.add("TRUE ORDER BY id DESC LIMIT $", Int64(limit))
            return try await Self.auditEntries(connection, condition.query, self.logger).reversed()
        }
    }

    public func auditChain() async throws -> AuditChain {
        try await self.transaction { connection in
            try await connection.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", logger: self.logger)
            let entries = try await Self.auditEntries(connection, "ORDER BY id", self.logger)
            var unrecorded: [String] = []
            let rows = try await connection.query(
                """
                SELECT id FROM transfer WHERE id NOT IN
                (SELECT transfer_id FROM audit_log WHERE action = 'transfer.created' AND transfer_id IS NOT NULL)
                ORDER BY created_at
                """,
                logger: self.logger
            )
            for try await id in rows.decode(String.self) { unrecorded.append(id) }
            return AuditChain(entries: entries, transfersWithoutCreation: unrecorded)
        }
    }

    // MARK: Writes

    public func recordHandOff(_ entry: HandOffEntry, inTransaction: @escaping @Sendable () throws -> Void) async throws {
        do {
            try await self.transaction { connection in
                try await connection.query("SELECT pg_advisory_xact_lock_shared(\(LockKey.content))", logger: self.logger)
                try await self.insert(entry, connection, inTransaction: inTransaction)
            }
        } catch let error as PSQLError where error.serverInfo?[.sqlState] == "23505" && entry.slot != nil {
            // Another node claimed the slot between the check and the insert.
            throw BrokerError.slotTaken(entry.slot ?? "")
        }
        if !entry.notifications.isEmpty { self.notifications.enqueued() }
    }

    /// The audit chain's last entry (the genesis hash at id 0 for an empty chain), read by a transaction that holds
    /// the audit head lock.
    struct AuditHead: Sendable {
        var id: Int64
        var hash: String
    }

    /// Takes the audit head lock and reads the head, inside the caller's transaction.
    func lockAuditHead(_ connection: PostgresConnection) async throws -> AuditHead {
        try await connection.query("SELECT pg_advisory_xact_lock(\(LockKey.auditHead))", logger: self.logger)
        var head = AuditHead(id: 0, hash: AuditEntry.genesisHash)
        for try await (id, hash) in try await connection.query("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1", logger: self.logger)
            .decode((Int64, String).self)
        {
            head = AuditHead(id: id, hash: hash)
        }
        return head
    }

    /// The rows of one hand-off, inside the caller's transaction (which holds the shared content lock).
    ///
    /// - Parameter head: the audit head when the caller holds every lock the hand-off needs (its quota subjects,
    ///   content and slot, and the audit head: a group does), so none is taken again; nil to take them here.
    /// - Returns: the audit head after the hand-off's entry, for the next member of a group.
    @discardableResult
    func insert(
        _ entry: HandOffEntry,
        _ connection: PostgresConnection,
        inTransaction: @escaping @Sendable () throws -> Void,
        head: AuditHead? = nil
    ) async throws -> AuditHead {
        let transfer = entry.transfer
        let locksHeld = head != nil
        // Quota subjects first: the lock order is quota subjects, content, slot, audit head.
        try await self.enforceQuota(of: entry, connection, locked: locksHeld)
        if entry.verdict.isClean, !locksHeld {
            // Against a concurrent removal of the same content (``removeUnsharedContent``).
            try await connection.query("SELECT pg_advisory_xact_lock(hashtextextended(\(transfer.sha256), 0))", logger: self.logger)
        }
        if let slot = entry.slot {
            // Claims of one slot queue here, so the check below is the claim: no node moves bytes into the
            // store for a slot another node is claiming.
            if !locksHeld {
                try await connection.query("SELECT pg_advisory_xact_lock(hashtextextended(\(slot), 1))", logger: self.logger)
            }
            let taken = try await connection.query("SELECT 1 FROM upload_slot WHERE path = \(slot)", logger: self.logger).collect()
            guard taken.isEmpty else { throw BrokerError.slotTaken(slot) }
        }
        try await Self.offThePool(inTransaction)
        // The audit head before the transfer row: its trigger updates quota counters every hand-off shares, so
        // they are only ever touched under this lock (PostgresLedger+Quotas.swift has the whole lock order).
        let last = if let head { head } else { try await self.lockAuditHead(connection) }
        var event = AuditEvent(
            at: transfer.createdAt,
            actor: "server:\(transfer.server)",
            action: "transfer.created",
            transferId: transfer.id,
            details: entry.auditDetails
        )
        event.details = event.details.stamped(node: self.node)
        let audit = try AuditEntry.next(afterId: last.id, hash: last.hash, event)
        try await Self.insertRows(entry, audit: audit, connection, self.logger)
        if let slot = entry.slot {
            try await connection.query(
                "INSERT INTO upload_slot (path, transfer_id, created_at) VALUES (\(slot), \(transfer.id), \(Self.milliseconds(transfer.createdAt)))",
                logger: self.logger
            )
        }
        if !entry.notifications.isEmpty {
            let subject = NotificationSubject(record: transfer, recipients: entry.recipients, downloads: [])
            try await self.publish(entry.notifications, connection, subject: subject)
        }
        return AuditHead(id: audit.id ?? last.id + 1, hash: audit.hash)
    }

    /// A hand-off's verdict cache entry, transfer, recipients, download tokens and `transfer.created` audit entry
    /// in one statement: one round trip instead of one per row (the foreign keys are checked at its end).
    private static func insertRows(_ entry: HandOffEntry, audit: AuditEntry, _ connection: PostgresConnection, _ logger: Logger) async throws {
        let transfer = entry.transfer
        let issuances = entry.issuances
        guard issuances.allSatisfy({ $0.usedAt == nil }) else {
            // Never so for a new hand-off's tokens; kept correct all the same, row by row.
            var rest = entry
            rest.issuances = []
            try await Self.insertRows(rest, audit: audit, connection, logger)
            for issuance in issuances { try await Self.insert(issuance, connection, logger) }
            return
        }
        // A hand-off without a verdict to cache binds a placeholder that `WHERE false` leaves out.
        let cached = entry.cachedVerdict
        let verdict =
            cached
            ?? VerdictCacheRecord(sha256: transfer.sha256, signatureVersion: "", detectedType: "", typeDescription: "", createdAt: transfer.createdAt)
        try await connection.query(
            """
            WITH new_verdict AS (
                INSERT INTO verdict_cache (sha256, signature_version, detected_type, type_description, created_at, scanner_failure)
                SELECT \(verdict.sha256), \(verdict.signatureVersion), \(verdict.detectedType), \(verdict.typeDescription),
                \(Self.milliseconds(verdict.createdAt)), \(verdict.scannerFailure) WHERE \(cached != nil)
                ON CONFLICT (sha256, signature_version) DO UPDATE SET detected_type = EXCLUDED.detected_type,
                type_description = EXCLUDED.type_description, created_at = EXCLUDED.created_at, scanner_failure = EXCLUDED.scanner_failure),
            new_transfer AS (
                INSERT INTO transfer (id, server, sender, filename, original_filename, declared_type, detected_type, type_description,
                size, sha256, verdict, signature, reason, state, signature_version, created_at, updated_at, node, recalled_at, content_class)
                VALUES (\(transfer.id), \(transfer.server), \(transfer.sender), \(transfer.filename), \(transfer.originalFilename),
                \(transfer.declaredType), \(transfer.detectedType), \(transfer.typeDescription), \(transfer.size), \(transfer.sha256),
                \(transfer.verdict.rawValue), \(transfer.signature), \(transfer.reason), \(transfer.state.rawValue), \(transfer.signatureVersion),
                \(Self.milliseconds(transfer.createdAt)), \(Self.milliseconds(transfer.updatedAt)), \(transfer.node),
                \(transfer.recalledAt.map(Self.milliseconds)), \(transfer.contentClass.rawValue))),
            new_recipients AS (
                INSERT INTO transfer_recipient (transfer_id, recipient)
                SELECT \(transfer.id), recipient FROM unnest(\(entry.recipients)::text[]) AS recipient),
            new_tokens AS (
                INSERT INTO token_issuance (token_id, transfer_id, recipient, key_id, issued_at, expires_at)
                SELECT * FROM unnest(\(issuances.map(\.tokenId))::text[], \(issuances.map(\.transferId))::text[],
                \(issuances.map(\.recipient))::text[], \(issuances.map(\.keyId))::text[],
                \(issuances.map { Self.milliseconds($0.issuedAt) })::bigint[], \(issuances.map { Self.milliseconds($0.expiresAt) })::bigint[]))
            INSERT INTO audit_log (id, at, actor, action, transfer_id, details, previous_hash, hash)
            VALUES (\(audit.id ?? 0), \(Self.milliseconds(audit.at)), \(audit.actor), \(audit.action), \(audit.transferId),
            \(audit.details), \(audit.previousHash), \(audit.hash))
            """,
            logger: logger
        )
    }

    public func recordIssuance(_ issuance: TokenIssuanceRecord, audit: AuditEvent?) async throws {
        try await self.transaction { connection in
            try await Self.insert(issuance, connection, self.logger)
            if let audit { try await self.append(audit, connection) }
        }
    }

    public func consumeToken(id tokenId: String, at date: Date) async throws -> Bool {
        let rows = try await self.client.query(
            "UPDATE token_issuance SET used_at = \(Self.milliseconds(date)) WHERE token_id = \(tokenId) AND used_at IS NULL RETURNING token_id",
            logger: self.logger
        )
        return try await rows.collect().count == 1
    }

    public func recordDownload(_ download: DownloadRecord) async throws {
        try await self.client.query(
            """
            INSERT INTO download (transfer_id, recipient, at, remote_address, bytes, status)
            VALUES (\(download.transferId), \(download.recipient), \(Self.milliseconds(download.at)), \(download.remoteAddress),
            \(download.bytes), \(Int32(download.status)))
            """,
            logger: self.logger
        )
    }

    public func appendAudit(_ event: AuditEvent) async throws {
        try await self.transaction { connection in
            try await self.append(event, connection)
        }
    }

    @discardableResult
    public func changeTransfer(
        id: String,
        event: AuditEvent,
        notify: @escaping @Sendable (TransferRecord) -> [NotificationEvent],
        _ decide: @escaping @Sendable (TransferRecord) throws -> TransferChange
    ) async throws -> TransferRecord? {
        let changed = try await self.transaction { connection -> (TransferRecord, published: Bool)? in
            // The content lock before the row's (a transfer's digest never changes, so it is read unlocked): the order
            // a recall and a removal of the same content take them too, so none waits on another in a circle.
            // Leaving stored/released removes content; a recall of it may be moving it to the quarantine.
            var digest: String?
            for try await sha256 in try await connection.query("SELECT sha256 FROM transfer WHERE id = \(id)", logger: self.logger)
                .decode(String.self)
            {
                digest = sha256
            }
            guard let digest else { return nil }
            try await connection.query("SELECT pg_advisory_xact_lock(hashtextextended(\(digest), 0))", logger: self.logger)
            guard let current = try await Self.transfers(connection, "WHERE id = \(id) FOR UPDATE", self.logger).first else { return nil }
            var event = event
            switch try await Self.offThePool({ try decide(current) }) {
            case .skip:
                return nil
            case .keepState:
                break
            case .setState(let state):
                // The audit head before the change of state, whose trigger updates the quota counters.
                try await connection.query("SELECT pg_advisory_xact_lock(\(LockKey.auditHead))", logger: self.logger)
                try await connection.query(
                    "UPDATE transfer SET state = \(state.rawValue), updated_at = \(Self.milliseconds(event.at)) WHERE id = \(id)",
                    logger: self.logger
                )
                event.details["previousState"] = event.details["previousState"] ?? current.state.rawValue
            }
            try await self.append(event, connection)
            let events = notify(current)
            try await self.publish(events, connection)
            return (current, !events.isEmpty)
        }
        if changed?.published == true { self.notifications.enqueued() }
        return changed?.0
    }

    public func removeUnsharedContent(sha256: String, _ remove: @escaping @Sendable () throws -> Void) async throws {
        try await self.transaction { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(hashtextextended(\(sha256), 0))", logger: self.logger)
            let sharing = try await connection.query(
                "SELECT 1 FROM transfer WHERE sha256 = \(sha256) AND state IN ('stored', 'released') LIMIT 1",
                logger: self.logger
            ).collect()
            if sharing.isEmpty { try await Self.offThePool(remove) }
        }
    }

    public func withLiveContent<Result: Sendable>(_ body: @escaping @Sendable (LiveContent) throws -> Result) async throws -> Result {
        try await self.transaction { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(LockKey.content))", logger: self.logger)
            var clean: Set<String> = []
            for try await sha256 in try await connection.query(
                "SELECT DISTINCT sha256 FROM transfer WHERE state IN ('stored', 'released')",
                logger: self.logger
            ).decode(String.self) {
                clean.insert(sha256)
            }
            var quarantined: Set<String> = []
            for try await id in try await connection.query("SELECT id FROM transfer WHERE state = 'quarantined'", logger: self.logger)
                .decode(String.self)
            {
                quarantined.insert(id)
            }
            let live = LiveContent(cleanHashes: clean, quarantinedIds: quarantined)
            return try await Self.offThePool { try body(live) }
        }
    }

    /// Runs a caller's closure (file moves, syncs: blocking work) on a thread of NIO's shared pool, never on the
    /// cooperative pool, while the transaction waits for it.
    static func offThePool<Result: Sendable>(_ work: @escaping @Sendable () throws -> Result) async throws -> Result {
        try await NIOThreadPool.singleton.runIfActive(work)
    }

    /// One transaction; the error its body threw (or the commit's) is rethrown as it is, not wrapped.
    ///
    /// Not postgres-nio's `withTransaction`: its BEGIN, COMMIT and ROLLBACK would wait forever on a connection the
    /// server closed meanwhile (``ClosedConnectionWatch``); here they fail, and so does the transaction.
    func transaction<Result: Sendable>(_ body: (PostgresConnection) async throws -> Result) async throws -> Result {
        try await self.client.withConnection { connection in
            try await self.closing.execute("BEGIN", on: connection, logger: self.logger)
            let value: Result
            do {
                value = try await body(connection)
            } catch {
                // Best effort: a connection that closed has rolled back on the server already.
                try? await self.closing.execute("ROLLBACK", on: connection, logger: self.logger)
                throw error
            }
            try await self.closing.execute("COMMIT", on: connection, logger: self.logger)
            return value
        }
    }

    // MARK: Rows

    /// Appends `event` to the audit chain inside the caller's transaction, the chain's head locked until it commits.
    func append(_ event: AuditEvent, _ connection: PostgresConnection) async throws {
        let head = try await self.lockAuditHead(connection)
        var event = event
        event.details = event.details.stamped(node: self.node)
        let entry = try AuditEntry.next(afterId: head.id, hash: head.hash, event)
        try await connection.query(
            """
            INSERT INTO audit_log (id, at, actor, action, transfer_id, details, previous_hash, hash)
            VALUES (\(entry.id ?? head.id + 1), \(Self.milliseconds(entry.at)), \(entry.actor), \(entry.action), \(entry.transferId),
            \(entry.details), \(entry.previousHash), \(entry.hash))
            """,
            logger: self.logger
        )
    }

    private static func insert(_ transfer: TransferRecord, _ connection: PostgresConnection, _ logger: Logger) async throws {
        try await connection.query(
            """
            INSERT INTO transfer (id, server, sender, filename, original_filename, declared_type, detected_type, type_description,
            size, sha256, verdict, signature, reason, state, signature_version, created_at, updated_at, node, recalled_at, content_class)
            VALUES (\(transfer.id), \(transfer.server), \(transfer.sender), \(transfer.filename), \(transfer.originalFilename),
            \(transfer.declaredType), \(transfer.detectedType), \(transfer.typeDescription), \(transfer.size), \(transfer.sha256),
            \(transfer.verdict.rawValue), \(transfer.signature), \(transfer.reason), \(transfer.state.rawValue), \(transfer.signatureVersion),
            \(Self.milliseconds(transfer.createdAt)), \(Self.milliseconds(transfer.updatedAt)), \(transfer.node),
            \(transfer.recalledAt.map(Self.milliseconds)), \(transfer.contentClass.rawValue))
            """,
            logger: logger
        )
    }

    private static func insert(_ issuance: TokenIssuanceRecord, _ connection: PostgresConnection, _ logger: Logger) async throws {
        try await connection.query(
            """
            INSERT INTO token_issuance (token_id, transfer_id, recipient, key_id, issued_at, expires_at, used_at)
            VALUES (\(issuance.tokenId), \(issuance.transferId), \(issuance.recipient), \(issuance.keyId),
            \(Self.milliseconds(issuance.issuedAt)), \(Self.milliseconds(issuance.expiresAt)), \(issuance.usedAt.map(Self.milliseconds)))
            """,
            logger: logger
        )
    }

    /// Inserts or replaces the row, as SQLite's `INSERT OR REPLACE` does.
    static func save(_ verdict: VerdictCacheRecord, _ connection: PostgresConnection, _ logger: Logger) async throws {
        try await connection.query(
            """
            INSERT INTO verdict_cache (sha256, signature_version, detected_type, type_description, created_at, scanner_failure)
            VALUES (\(verdict.sha256), \(verdict.signatureVersion), \(verdict.detectedType), \(verdict.typeDescription),
            \(Self.milliseconds(verdict.createdAt)), \(verdict.scannerFailure))
            ON CONFLICT (sha256, signature_version) DO UPDATE SET detected_type = EXCLUDED.detected_type,
            type_description = EXCLUDED.type_description, created_at = EXCLUDED.created_at,
            scanner_failure = EXCLUDED.scanner_failure
            """,
            logger: logger
        )
    }

    static let transferColumns = """
        SELECT id, server, sender, filename, original_filename, declared_type, detected_type, type_description, size, sha256,
        verdict, signature, reason, state, signature_version, created_at, updated_at, node, recalled_at, content_class FROM transfer
        """

    static func transfers(_ connection: PostgresConnection, _ condition: PostgresQuery, _ logger: Logger) async throws -> [TransferRecord] {
        var query = PostgresQuery(unsafeSQL: Self.transferColumns + " ")
        query.sql += condition.sql
        query.binds = condition.binds
        var records: [TransferRecord] = []
        for try await row in try await connection.query(query, logger: logger) {
            let (
                id, server, sender, filename, originalFilename, declaredType, detectedType, typeDescription, size, sha256, verdict, signature,
                reason, state, signatureVersion, createdAt, updatedAt, node, recalledAt, contentClassName
            ) = try row.decode(
                (
                    String, String, String, String, String, String?, String?, String?, Int64, String, String, String?, String?, String, String,
                    Int64, Int64, String?, Int64?, String
                ).self
            )
            guard let verdictKind = Verdict.Kind(rawValue: verdict), let transferState = TransferState(rawValue: state),
                let contentClass = ContentClass(rawValue: contentClassName)
            else {
                throw PostgresLedgerError.corruptRow(table: "transfer", id: id)
            }
            records.append(
                TransferRecord(
                    id: id,
                    server: server,
                    sender: sender,
                    filename: filename,
                    originalFilename: originalFilename,
                    declaredType: declaredType,
                    detectedType: detectedType,
                    typeDescription: typeDescription,
                    size: size,
                    sha256: sha256,
                    verdict: verdictKind,
                    signature: signature,
                    reason: reason,
                    state: transferState,
                    signatureVersion: signatureVersion,
                    createdAt: Self.date(createdAt),
                    updatedAt: Self.date(updatedAt),
                    node: node,
                    contentClass: contentClass,
                    recalledAt: recalledAt.map(Self.date)
                )
            )
        }
        return records
    }

    static func recipients(of transferId: String, _ connection: PostgresConnection, _ logger: Logger) async throws -> [String] {
        var recipients: [String] = []
        let rows = try await connection.query(
            "SELECT recipient FROM transfer_recipient WHERE transfer_id = \(transferId) ORDER BY recipient COLLATE \"C\"",
            logger: logger
        )
        for try await recipient in rows.decode(String.self) { recipients.append(recipient) }
        return recipients
    }

    private static func auditEntries(_ connection: PostgresConnection, _ condition: PostgresQuery, _ logger: Logger) async throws -> [AuditEntry] {
        var query = PostgresQuery(unsafeSQL: "SELECT id, at, actor, action, transfer_id, details, previous_hash, hash FROM audit_log ")
        query.sql += condition.sql
        query.binds = condition.binds
        var entries: [AuditEntry] = []
        for try await (id, at, actor, action, transferId, details, previousHash, hash) in try await connection.query(query, logger: logger)
            .decode((Int64, Int64, String, String, String?, String, String, String).self)
        {
            entries.append(
                AuditEntry(
                    id: id,
                    at: Self.date(at),
                    actor: actor,
                    action: action,
                    transferId: transferId,
                    details: details,
                    previousHash: previousHash,
                    hash: hash
                )
            )
        }
        return entries
    }

    static func milliseconds(_ date: Date) -> Int64 {
        Int64((date.timeIntervalSince1970 * 1000).rounded())
    }

    static func date(_ milliseconds: Int64) -> Date {
        Date(timeIntervalSince1970: Double(milliseconds) / 1000)
    }
}

/// A PostgreSQL ledger that holds what Airlock never writes.
enum PostgresLedgerError: Error, CustomStringConvertible {
    case corruptRow(table: String, id: String)

    var description: String {
        switch self {
        case .corruptRow(let table, let id): "the \(table) row \(id) holds a value Airlock never writes: restore the ledger from a backup"
        }
    }
}

/// A `WHERE` clause built condition by condition, each `$` in a condition replaced by its bound value's number.
private struct Condition {
    private var sql = "WHERE"
    private var binds = PostgresBindings()

    mutating func add<Value: PostgresThrowingDynamicTypeEncodable>(_ condition: String, _ value: Value?) throws {
        var text = condition
        if let value, let marker = text.firstIndex(of: "$") {
            try self.binds.append(value)
            text.replaceSubrange(marker...marker, with: "$\(self.binds.count)")
        }
        self.sql += (self.sql == "WHERE" ? " " : " AND ") + text
    }

    var query: PostgresQuery { PostgresQuery(unsafeSQL: self.sql, binds: self.binds) }
}

// MARK: Copying a whole ledger

extension PostgresLedger {
    public func rowCounts() async throws -> LedgerCounts {
        try await self.client.withConnection { connection in
            try await Self.rowCounts(connection, self.logger)
        }
    }

    public func exportSnapshot() async throws -> LedgerSnapshot {
        try await self.transaction { connection in
            try await connection.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY", logger: self.logger)
            var snapshot = LedgerSnapshot()
            snapshot.transfers = try await Self.transfers(connection, "ORDER BY created_at, id", self.logger)
            for try await (transferId, recipient) in try await connection.query(
                "SELECT transfer_id, recipient FROM transfer_recipient ORDER BY transfer_id, recipient COLLATE \"C\"",
                logger: self.logger
            ).decode((String, String).self) {
                snapshot.recipients.append(RecipientRecord(transferId: transferId, recipient: recipient))
            }
            for try await (tokenId, transferId, recipient, keyId, issuedAt, expiresAt, usedAt) in try await connection.query(
                """
                SELECT token_id, transfer_id, recipient, key_id, issued_at, expires_at, used_at FROM token_issuance
                ORDER BY issued_at, token_id
                """,
                logger: self.logger
            ).decode((String, String, String, String, Int64, Int64, Int64?).self) {
                snapshot.tokenIssuances.append(
                    TokenIssuanceRecord(
                        tokenId: tokenId,
                        transferId: transferId,
                        recipient: recipient,
                        keyId: keyId,
                        issuedAt: Self.date(issuedAt),
                        expiresAt: Self.date(expiresAt),
                        usedAt: usedAt.map(Self.date)
                    )
                )
            }
            for try await (id, transferId, recipient, at, remoteAddress, bytes, status) in try await connection.query(
                "SELECT id, transfer_id, recipient, at, remote_address, bytes, status FROM download ORDER BY id",
                logger: self.logger
            ).decode((Int64, String, String?, Int64, String?, Int64, Int32).self) {
                var download = DownloadRecord(
                    transferId: transferId,
                    recipient: recipient,
                    at: Self.date(at),
                    remoteAddress: remoteAddress,
                    bytes: bytes,
                    status: Int(status)
                )
                download.id = id
                snapshot.downloads.append(download)
            }
            for try await (path, transferId, createdAt) in try await connection.query(
                "SELECT path, transfer_id, created_at FROM upload_slot ORDER BY created_at, path",
                logger: self.logger
            ).decode((String, String, Int64).self) {
                snapshot.uploadSlots.append(UploadSlotRecord(path: path, transferId: transferId, createdAt: Self.date(createdAt)))
            }
            for try await (sha256, signatureVersion, detectedType, typeDescription, createdAt, failure) in try await connection.query(
                """
                SELECT sha256, signature_version, detected_type, type_description, created_at, scanner_failure FROM verdict_cache
                ORDER BY created_at, sha256, signature_version
                """,
                logger: self.logger
            ).decode((String, String, String, String, Int64, String?).self) {
                snapshot.verdictCache.append(
                    VerdictCacheRecord(
                        sha256: sha256,
                        signatureVersion: signatureVersion,
                        detectedType: detectedType,
                        typeDescription: typeDescription,
                        createdAt: Self.date(createdAt),
                        scannerFailure: failure
                    )
                )
            }
            snapshot.auditLog = try await Self.auditEntries(connection, "ORDER BY id", self.logger)
            snapshot.notificationOutbox = try await Self.outboxRows(connection, self.logger)
            return snapshot
        }
    }

    public func importSnapshot(_ snapshot: LedgerSnapshot, progress: @escaping @Sendable (LedgerTable, Int) -> Void) async throws {
        try await self.transaction { connection in
            // The audit head and every content lock: a node started on this ledger too early waits for the copy,
            // then chains its entries after the copied ones.
            try await connection.query("SELECT pg_advisory_xact_lock(\(LockKey.auditHead))", logger: self.logger)
            try await connection.query("SELECT pg_advisory_xact_lock(\(LockKey.content))", logger: self.logger)
            let counts = try await Self.rowCounts(connection, self.logger)
            guard counts.isEmpty else { throw LedgerCopyError.targetNotEmpty(counts) }
            for transfer in snapshot.transfers {
                try await Self.insert(transfer, connection, self.logger)
            }
            progress(.transfers, snapshot.transfers.count)
            for recipient in snapshot.recipients {
                try await connection.query(
                    "INSERT INTO transfer_recipient (transfer_id, recipient) VALUES (\(recipient.transferId), \(recipient.recipient))",
                    logger: self.logger
                )
            }
            progress(.recipients, snapshot.recipients.count)
            for issuance in snapshot.tokenIssuances {
                try await Self.insert(issuance, connection, self.logger)
            }
            progress(.tokenIssuances, snapshot.tokenIssuances.count)
            for download in snapshot.downloads {
                try await connection.query(
                    """
                    INSERT INTO download (id, transfer_id, recipient, at, remote_address, bytes, status)
                    VALUES (COALESCE(\(download.id), nextval(pg_get_serial_sequence('download', 'id'))), \(download.transferId),
                    \(download.recipient), \(Self.milliseconds(download.at)), \(download.remoteAddress), \(download.bytes), \(Int32(download.status)))
                    """,
                    logger: self.logger
                )
            }
            // Copied ids were given explicitly: the next download follows the last of them.
            try await connection.query(
                "SELECT setval(pg_get_serial_sequence('download', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM download",
                logger: self.logger
            )
            progress(.downloads, snapshot.downloads.count)
            for slot in snapshot.uploadSlots {
                try await connection.query(
                    "INSERT INTO upload_slot (path, transfer_id, created_at) VALUES (\(slot.path), \(slot.transferId), \(Self.milliseconds(slot.createdAt)))",
                    logger: self.logger
                )
            }
            progress(.uploadSlots, snapshot.uploadSlots.count)
            for verdict in snapshot.verdictCache {
                try await Self.save(verdict, connection, self.logger)
            }
            progress(.verdictCache, snapshot.verdictCache.count)
            for entry in snapshot.auditLog {
                // As it is: the id, time, details and both hashes of the source, not chained again.
                try await connection.query(
                    """
                    INSERT INTO audit_log (id, at, actor, action, transfer_id, details, previous_hash, hash)
                    VALUES (\(entry.id), \(Self.milliseconds(entry.at)), \(entry.actor), \(entry.action), \(entry.transferId),
                    \(entry.details), \(entry.previousHash), \(entry.hash))
                    """,
                    logger: self.logger
                )
            }
            progress(.auditLog, snapshot.auditLog.count)
            try await Self.insertOutboxRows(snapshot.notificationOutbox, connection, self.logger)
            progress(.notificationOutbox, snapshot.notificationOutbox.count)
        }
    }

    private static func rowCounts(_ connection: PostgresConnection, _ logger: Logger) async throws -> LedgerCounts {
        let rows = try await connection.query(
            """
            SELECT (SELECT count(*) FROM transfer), (SELECT count(*) FROM transfer_recipient), (SELECT count(*) FROM token_issuance),
            (SELECT count(*) FROM download), (SELECT count(*) FROM upload_slot), (SELECT count(*) FROM verdict_cache),
            (SELECT count(*) FROM audit_log), (SELECT count(*) FROM notification_outbox)
            """,
            logger: logger
        )
        for try await (transfers, recipients, issuances, downloads, slots, verdicts, audit, outbox) in rows.decode(
            (Int64, Int64, Int64, Int64, Int64, Int64, Int64, Int64).self
        ) {
            return LedgerCounts(
                transfers: Int(transfers),
                recipients: Int(recipients),
                tokenIssuances: Int(issuances),
                downloads: Int(downloads),
                uploadSlots: Int(slots),
                verdictCache: Int(verdicts),
                auditLog: Int(audit),
                notificationOutbox: Int(outbox)
            )
        }
        return LedgerCounts()
    }
}
