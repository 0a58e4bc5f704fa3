import Foundation
import GRDB

// Quota usage is counted, not summed on demand: summing a busy server's transfers on every hand-off, inside the
// single write lock, would cost more the longer the ledger grows. Triggers on `transfer` keep the counts, so every
// write of a transfer (a hand-off, a deletion, a purge, a release, a ledger copy) keeps them right without any
// caller knowing; they are never written otherwise.

extension SQLiteLedger {
    /// Whether the state in `column` holds bytes (every state but deleted and purged). Written as two comparisons:
    /// an `IN` list costs a temporary index per row in a trigger, which made the triggers several times dearer.
    static func isStoredSQL(_ column: String) -> String {
        "(\(column) <> 'deleted' AND \(column) <> 'purged')"
    }

    /// Migration v5's quota part: the counters, their triggers, and the counts of the transfers already recorded.
    ///
    /// `quotaUsage` holds each uploader's (`sender`), server's and the whole broker's (`global`, subject `''`) stored
    /// bytes and files; `quotaDailyUsage` each uploader's and server's bytes and files accepted per UTC day (days
    /// since 1970, from `createdAt`), which deletions do not give back.
    static func createQuotaUsage(_ db: Database) throws {
        let stored = Self.isStoredSQL("state")
        let day = "CAST(strftime('%s', createdAt) AS INTEGER) / 86400"
        try db.execute(
            sql: """
                CREATE TABLE quotaUsage (
                    scope TEXT NOT NULL, subject TEXT NOT NULL, storedBytes INTEGER NOT NULL, storedFiles INTEGER NOT NULL,
                    PRIMARY KEY (scope, subject)) WITHOUT ROWID;
                CREATE TABLE quotaDailyUsage (
                    scope TEXT NOT NULL, subject TEXT NOT NULL, day INTEGER NOT NULL, bytes INTEGER NOT NULL, files INTEGER NOT NULL,
                    PRIMARY KEY (scope, subject, day)) WITHOUT ROWID;

                INSERT INTO quotaUsage (scope, subject, storedBytes, storedFiles)
                SELECT 'uploader', sender, SUM(CASE WHEN \(stored) THEN size ELSE 0 END),
                    SUM(\(stored)) FROM transfer GROUP BY sender;
                INSERT INTO quotaUsage (scope, subject, storedBytes, storedFiles)
                SELECT 'server', server, SUM(CASE WHEN \(stored) THEN size ELSE 0 END),
                    SUM(\(stored)) FROM transfer GROUP BY server;
                INSERT INTO quotaUsage (scope, subject, storedBytes, storedFiles)
                SELECT 'global', '', COALESCE(SUM(CASE WHEN \(stored) THEN size ELSE 0 END), 0),
                    COALESCE(SUM(\(stored)), 0) FROM transfer;
                INSERT INTO quotaDailyUsage (scope, subject, day, bytes, files)
                SELECT 'uploader', sender, \(day) AS d, SUM(size), COUNT(*) FROM transfer GROUP BY sender, d;
                INSERT INTO quotaDailyUsage (scope, subject, day, bytes, files)
                SELECT 'server', server, \(day) AS d, SUM(size), COUNT(*) FROM transfer GROUP BY server, d;
                """
        )
        let newDay = "CAST(strftime('%s', NEW.createdAt) AS INTEGER) / 86400"
        let newStored = Self.isStoredSQL("NEW.state")
        let newBytes = "CASE WHEN \(newStored) THEN NEW.size ELSE 0 END"
        let newFiles = newStored
        var onInsert = "CREATE TRIGGER quotaUsageOnInsert AFTER INSERT ON transfer BEGIN\n"
        for (scope, subject) in [("uploader", "NEW.sender"), ("server", "NEW.server")] {
            onInsert += """
                INSERT INTO quotaDailyUsage (scope, subject, day, bytes, files) VALUES ('\(scope)', \(subject), \(newDay), NEW.size, 1)
                    ON CONFLICT (scope, subject, day) DO UPDATE SET bytes = bytes + excluded.bytes, files = files + 1;\n
                """
        }
        // Every subject gets its row at its first transfer, so a change of state below always finds it.
        for (scope, subject) in [("uploader", "NEW.sender"), ("server", "NEW.server"), ("global", "''")] {
            onInsert += """
                INSERT INTO quotaUsage (scope, subject, storedBytes, storedFiles) VALUES ('\(scope)', \(subject), \(newBytes), \(newFiles))
                    ON CONFLICT (scope, subject) DO UPDATE SET storedBytes = storedBytes + excluded.storedBytes,
                    storedFiles = storedFiles + excluded.storedFiles;\n
                """
        }
        onInsert += "END"
        try db.execute(sql: onInsert)
        try db.execute(
            sql: """
                CREATE TRIGGER quotaUsageOnStateChange AFTER UPDATE OF state ON transfer
                WHEN \(Self.isStoredSQL("OLD.state")) <> \(newStored)
                BEGIN
                    UPDATE quotaUsage SET
                        storedBytes = storedBytes + CASE WHEN \(newStored) THEN NEW.size ELSE -NEW.size END,
                        storedFiles = storedFiles + CASE WHEN \(newStored) THEN 1 ELSE -1 END
                    WHERE (scope = 'uploader' AND subject = NEW.sender) OR (scope = 'server' AND subject = NEW.server)
                        OR (scope = 'global' AND subject = '');
                END
                """
        )
    }

    public func quotaUsage(_ subjects: [QuotaSubject]?, day: Int64) async throws -> [QuotaUsage] {
        try await self.writer.read { db in try Self.quotaUsage(subjects, day: day, db) }
    }

    public func pruneDailyQuotaUsage(before day: Int64, dryRun: Bool) async throws -> Int {
        if dryRun {
            return try await self.writer.read { db in
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM quotaDailyUsage WHERE day < ?", arguments: [day]) ?? 0
            }
        }
        return try await self.writer.write { db in
            try db.execute(sql: "DELETE FROM quotaDailyUsage WHERE day < ?", arguments: [day])
            return db.changesCount
        }
    }

    /// The usage of `subjects`, in their order (nil: all, highest stored bytes first; on a tie the broker, then
    /// servers, then uploaders; then highest bytes on `day`).
    static func quotaUsage(_ subjects: [QuotaSubject]?, day: Int64, _ db: Database) throws -> [QuotaUsage] {
        let select = """
            SELECT u.scope, u.subject, u.storedBytes, u.storedFiles, COALESCE(d.bytes, 0) AS dayBytes, COALESCE(d.files, 0)
            FROM quotaUsage u LEFT JOIN quotaDailyUsage d ON d.scope = u.scope AND d.subject = u.subject AND d.day = ?
            """
        func usage(_ row: Row) throws -> QuotaUsage {
            let scopeName: String = row[0]
            guard let scope = QuotaScope(rawValue: scopeName) else {
                throw DatabaseError(message: "quotaUsage holds the scope \(scopeName), which Airlock never writes: restore the ledger from a backup")
            }
            return QuotaUsage(subject: QuotaSubject(scope, row[1]), storedBytes: row[2], storedFiles: row[3], dayBytes: row[4], dayFiles: row[5])
        }
        guard let subjects else {
            let order = " ORDER BY u.storedBytes DESC, CASE u.scope WHEN 'global' THEN 0 WHEN 'server' THEN 1 ELSE 2 END, dayBytes DESC, u.subject"
            let rows = try Row.fetchAll(db, sql: select + order, arguments: [day])
            return try rows.map(usage)
        }
        let statement = try db.cachedStatement(sql: select + " WHERE u.scope = ? AND u.subject = ?")
        return try subjects.compactMap { subject in
            try Row.fetchOne(statement, arguments: [day, subject.scope.rawValue, subject.name]).map(usage)
        }
    }

    /// Throws ``BrokerError/quotaExceeded(_:)`` when `entry` does not fit in its quotas, inside the caller's write
    /// transaction (SQLite's single writer serialises it with every other hand-off).
    static func enforceQuota(of entry: HandOffEntry, _ db: Database) throws {
        guard let check = entry.quota else { return }
        let transfer = entry.transfer
        let usage = try Self.quotaUsage(check.subjects, day: QuotaDay.of(transfer.createdAt), db)
        if let refusal = check.refusal(adding: transfer.size, at: transfer.createdAt, usage: usage) {
            throw BrokerError.quotaExceeded(refusal)
        }
    }
}
