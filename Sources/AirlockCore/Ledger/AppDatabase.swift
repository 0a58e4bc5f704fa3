import Foundation
public import GRDB

#if canImport(Glibc)
    import Glibc
#endif

/// The ledger: one SQLite database in WAL mode, its schema managed by named migrations.
///
/// Open each database file once per process; the `DatabasePool` serialises writes and runs reads concurrently.
public struct AppDatabase: Sendable {
    /// The database connection pool.
    public let writer: any DatabaseWriter

    /// Opens (creating if needed) the ledger at `path` and migrates it to the current schema.
    ///
    /// - Throws: `DatabaseError` when the file cannot be opened or migrated.
    public init(path: String) throws {
        var configuration = Configuration()
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            // Temporary tables, indices and statement journals in memory: SQLite would otherwise write them to files
            // in /var/tmp (or $TMPDIR), outside the data directory, on another filesystem. Each hand-off's savepoint in
            // a group commit wrote such a journal (60 KiB and more of the ledger's pages, in a world-writable directory).
            try db.execute(sql: "PRAGMA temp_store = MEMORY")
        }

        try Self.makePrivate(path)
        let pool = try DatabasePool(path: path, configuration: configuration)
        // Every commit is synced (the WAL is fsynced at each commit), so a 201 survives a power cut; group commit
        // makes that one sync per group of hand-offs rather than one per hand-off. Set on the writer once the pool is
        // open: GRDB sets NORMAL itself when it puts a new pool in WAL mode, after `prepareDatabase`.
        try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        try Self.migrator.migrate(pool)
        self.writer = pool
    }

    /// Creates the ledger file 0600 before SQLite does (it would use 0644 less the umask), and brings an existing
    /// ledger and its `-wal` and `-shm` files to 0600: it records who sent what to whom. SQLite gives the files it
    /// creates beside the database the database's own mode.
    private static func makePrivate(_ path: String) throws {
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw StoreError.io(operation: "create the ledger \(path)", errno: errno)
        }
        fchmod(descriptor, 0o600)
        close(descriptor)
        for suffix in ["-wal", "-shm"] {
            chmod(path + suffix, 0o600)
        }
    }

    /// The schema, one named migration per version.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.create(table: "transfer") { table in
                table.primaryKey("id", .text)
                table.column("server", .text).notNull()
                table.column("sender", .text).notNull()
                table.column("filename", .text).notNull()
                table.column("originalFilename", .text).notNull()
                table.column("declaredType", .text)
                table.column("detectedType", .text)
                table.column("typeDescription", .text)
                table.column("size", .integer).notNull()
                table.column("sha256", .text).notNull().indexed()
                table.column("verdict", .text).notNull()
                table.column("signature", .text)
                table.column("reason", .text)
                table.column("state", .text).notNull().indexed()
                table.column("signatureVersion", .text).notNull()
                table.column("createdAt", .datetime).notNull().indexed()
                table.column("updatedAt", .datetime).notNull()
            }
            try db.create(table: "transferRecipient") { table in
                table.column("transferId", .text).notNull().references("transfer", onDelete: .cascade)
                table.column("recipient", .text).notNull().indexed()
                table.primaryKey(["transferId", "recipient"])
            }
            try db.create(table: "download") { table in
                table.autoIncrementedPrimaryKey("id")
                table.column("transferId", .text).notNull().references("transfer").indexed()
                table.column("recipient", .text)
                table.column("at", .datetime).notNull()
                table.column("remoteAddress", .text)
                table.column("bytes", .integer).notNull()
                table.column("status", .integer).notNull()
            }
            try db.create(table: "tokenIssuance") { table in
                table.primaryKey("tokenId", .text)
                table.column("transferId", .text).notNull().references("transfer").indexed()
                table.column("recipient", .text).notNull()
                table.column("keyId", .text).notNull()
                table.column("issuedAt", .datetime).notNull()
                table.column("expiresAt", .datetime).notNull()
                table.column("usedAt", .datetime)
            }
            try db.create(table: "verdictCache") { table in
                table.column("sha256", .text).notNull()
                table.column("signatureVersion", .text).notNull()
                table.column("detectedType", .text).notNull()
                table.column("typeDescription", .text).notNull()
                table.column("createdAt", .datetime).notNull()
                table.primaryKey(["sha256", "signatureVersion"])
            }
            try db.create(table: "audit_log") { table in
                table.autoIncrementedPrimaryKey("id")
                table.column("at", .datetime).notNull()
                table.column("actor", .text).notNull()
                table.column("action", .text).notNull()
                table.column("transferId", .text).indexed()
                table.column("details", .text).notNull()
                table.column("previousHash", .text).notNull()
                table.column("hash", .text).notNull()
            }
            // The audit log is append-only: the database itself refuses edits through SQL.
            try db.execute(
                sql: """
                    CREATE TRIGGER auditLogNoUpdate BEFORE UPDATE ON audit_log
                    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                    CREATE TRIGGER auditLogNoDelete BEFORE DELETE ON audit_log
                    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
                    """
            )
        }
        migrator.registerMigration("v2") { db in
            // XEP-0363 slots: the upload path (after the prefix, percent-decoded) → the transfer it holds.
            try db.create(table: "uploadSlot") { table in
                table.primaryKey("path", .text)
                table.column("transferId", .text).notNull().references("transfer").indexed()
                table.column("createdAt", .datetime).notNull()
            }
        }
        migrator.registerMigration("v3") { db in
            // The node (node.id) that received each transfer, for several nodes on one ledger.
            try db.alter(table: "transfer") { table in
                table.add(column: "node", .text)
            }
        }
        migrator.registerMigration("v4") { db in
            // Scanner failures (a crash or an overrun while parsing) remembered for the content, beside clean verdicts.
            try db.alter(table: "verdictCache") { table in
                table.add(column: "scannerFailure", .text)
            }
        }
        migrator.registerMigration("v5") { db in
            // Issue 16: quota usage counters (SQLiteLedger+Quotas.swift) and each transfer's content class.
            try SQLiteLedger.createQuotaUsage(db)
            try db.alter(table: "transfer") { table in
                table.add(column: "contentClass", .text).notNull().defaults(to: "inspected")
            }
        }
        migrator.registerMigration("v6") { db in
            // The notification outbox: one row per event and webhook, written in the transaction of the change it
            // reports, delivered by `airlock serve` (SQLiteLedger+Outbox.swift).
            try db.create(table: "notificationOutbox") { table in
                table.autoIncrementedPrimaryKey("id")
                table.column("eventId", .text).notNull()
                table.column("event", .text).notNull()
                table.column("webhook", .text).notNull()
                table.column("orderKey", .text).notNull()
                table.column("payload", .text).notNull()
                table.column("createdAt", .datetime).notNull()
                table.column("attempts", .integer).notNull().defaults(to: 0)
                table.column("nextAttemptAt", .datetime).notNull()
                table.column("leasedUntil", .datetime)
                table.column("leasedBy", .text)
                table.column("deliveredAt", .datetime)
                table.column("lastError", .text)
                table.uniqueKey(["eventId", "webhook"])
            }
            try db.execute(
                sql: "CREATE INDEX notificationOutboxPending ON notificationOutbox (webhook, orderKey, id) WHERE deliveredAt IS NULL"
            )
        }
        migrator.registerMigration("v7") { db in
            // Recall (issue 15): when a retro-scan found delivered content no longer clean.
            try db.alter(table: "transfer") { table in
                table.add(column: "recalledAt", .datetime)
            }
            // Retro-scan looks for clean content of a time window that one signature version has not checked yet.
            try db.create(index: "transferStateCreatedAt", on: "transfer", columns: ["state", "createdAt"])
        }
        migrator.registerMigration("v8") { db in
            // transferStateCreatedAt answers every lookup by state: the index on state alone only cost each insert
            // (one more B-tree to update under the write lock, one more page in the write-ahead log).
            try db.drop(index: "transfer_on_state")
        }
        migrator.registerMigration("v9") { db in
            // Retro-scan leases (issue 14, part 3): which node checks which content with which signatures, until
            // when. Short-lived rows: a check or a recall ends a lease, a claim drops the ones that ran out.
            try db.create(table: "retroscanLease") { table in
                table.column("sha256", .text).notNull()
                table.column("signatureVersion", .text).notNull()
                table.column("node", .text).notNull()
                table.column("leasedUntil", .datetime).notNull()
                table.primaryKey(["sha256", "signatureVersion"])
            }
        }
        return migrator
    }

    /// The applied schema version, for `/readyz`.
    public func schemaVersion() async throws -> String {
        try await self.writer.read { db in
            try Self.migrator.appliedMigrations(db).last ?? "none"
        }
    }
}
