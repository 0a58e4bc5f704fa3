import Foundation
import Logging
import PostgresNIO

// Quota usage is counted by a trigger on `transfer`, as on SQLite (SQLiteLedger+Quotas.swift), so every write of
// a transfer keeps the counts right. A hand-off that must fit in a quota takes an advisory lock per subject
// (uploader, server, the whole broker) before it reads the counts, and holds it until it commits: hand-offs of the
// same subject serialise on every node, and the second sees the first's bytes.
//
// Lock order, so that no two transactions wait on each other: quota subjects (sorted), then content and slot locks,
// then the audit head, which every transaction takes before it writes a transfer row (and so before the trigger
// touches the counters, which every hand-off shares).

extension PostgresLedger {
    /// Migration pg3: the quota counters, their trigger and the counts of the transfers already recorded, and each
    /// transfer's content class.
    static let issue16Migration: [String] = [
        """
        CREATE TABLE quota_usage (
            scope TEXT NOT NULL, subject TEXT NOT NULL, stored_bytes BIGINT NOT NULL, stored_files BIGINT NOT NULL,
            PRIMARY KEY (scope, subject))
        """,
        """
        CREATE TABLE quota_daily_usage (
            scope TEXT NOT NULL, subject TEXT NOT NULL, day BIGINT NOT NULL, bytes BIGINT NOT NULL, files BIGINT NOT NULL,
            PRIMARY KEY (scope, subject, day))
        """,
        """
        INSERT INTO quota_usage (scope, subject, stored_bytes, stored_files)
        SELECT 'uploader', sender, SUM(CASE WHEN state NOT IN \(storedStates) THEN size ELSE 0 END),
            COUNT(*) FILTER (WHERE state NOT IN \(storedStates)) FROM transfer GROUP BY sender
        UNION ALL
        SELECT 'server', server, SUM(CASE WHEN state NOT IN \(storedStates) THEN size ELSE 0 END),
            COUNT(*) FILTER (WHERE state NOT IN \(storedStates)) FROM transfer GROUP BY server
        UNION ALL
        SELECT 'global', '', COALESCE(SUM(CASE WHEN state NOT IN \(storedStates) THEN size ELSE 0 END), 0),
            COUNT(*) FILTER (WHERE state NOT IN \(storedStates)) FROM transfer
        """,
        """
        INSERT INTO quota_daily_usage (scope, subject, day, bytes, files)
        SELECT 'uploader', sender, created_at / 86400000 AS d, SUM(size), COUNT(*) FROM transfer GROUP BY sender, d
        UNION ALL
        SELECT 'server', server, created_at / 86400000 AS d, SUM(size), COUNT(*) FROM transfer GROUP BY server, d
        """,
        """
        CREATE FUNCTION airlock_quota_usage() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            was_stored BOOLEAN := FALSE;
            is_stored BOOLEAN := NEW.state NOT IN \(storedStates);
            delta_bytes BIGINT := 0;
            delta_files BIGINT := 0;
        BEGIN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO quota_daily_usage AS q (scope, subject, day, bytes, files)
                VALUES ('uploader', NEW.sender, NEW.created_at / 86400000, NEW.size, 1),
                    ('server', NEW.server, NEW.created_at / 86400000, NEW.size, 1)
                ON CONFLICT (scope, subject, day) DO UPDATE SET bytes = q.bytes + EXCLUDED.bytes, files = q.files + EXCLUDED.files;
            ELSE
                was_stored := OLD.state NOT IN \(storedStates);
                IF was_stored = is_stored THEN RETURN NULL; END IF;
            END IF;
            IF is_stored AND NOT was_stored THEN
                delta_bytes := NEW.size;
                delta_files := 1;
            ELSIF was_stored AND NOT is_stored THEN
                delta_bytes := -NEW.size;
                delta_files := -1;
            END IF;
            -- Every subject gets its row at its first transfer, even with nothing stored.
            INSERT INTO quota_usage AS q (scope, subject, stored_bytes, stored_files)
            VALUES ('uploader', NEW.sender, delta_bytes, delta_files), ('server', NEW.server, delta_bytes, delta_files),
                ('global', '', delta_bytes, delta_files)
            ON CONFLICT (scope, subject) DO UPDATE SET stored_bytes = q.stored_bytes + EXCLUDED.stored_bytes,
                stored_files = q.stored_files + EXCLUDED.stored_files;
            RETURN NULL;
        END $$
        """,
        """
        CREATE TRIGGER transfer_quota_usage AFTER INSERT OR UPDATE OF state ON transfer
        FOR EACH ROW EXECUTE FUNCTION airlock_quota_usage()
        """,
        "ALTER TABLE transfer ADD COLUMN content_class TEXT NOT NULL DEFAULT 'inspected'",
    ]

    /// The states whose bytes do not count as stored: every other state holds bytes.
    private static var storedStates: String { "('deleted', 'purged')" }

    public func quotaUsage(_ subjects: [QuotaSubject]?, day: Int64) async throws -> [QuotaUsage] {
        try await self.client.withConnection { connection in
            try await Self.quotaUsage(subjects, day: day, connection, self.logger)
        }
    }

    public func pruneDailyQuotaUsage(before day: Int64, dryRun: Bool) async throws -> Int {
        let sql: PostgresQuery =
            dryRun
            ? "SELECT COUNT(*) FROM quota_daily_usage WHERE day < \(day)"
            : "WITH gone AS (DELETE FROM quota_daily_usage WHERE day < \(day) RETURNING 1) SELECT COUNT(*) FROM gone"
        var count = 0
        for try await rows in try await self.client.query(sql, logger: self.logger).decode(Int64.self) { count = Int(rows) }
        return count
    }

    /// The usage of `subjects`, in their order (nil: all, highest stored bytes first; on a tie the broker, then
    /// servers, then uploaders; then highest bytes on `day`).
    private static func quotaUsage(_ subjects: [QuotaSubject]?, day: Int64, _ connection: PostgresConnection, _ logger: Logger) async throws
        -> [QuotaUsage]
    {
        let select = """
            SELECT u.scope, u.subject, u.stored_bytes, u.stored_files, COALESCE(d.bytes, 0) AS day_bytes, COALESCE(d.files, 0)
            FROM quota_usage u LEFT JOIN quota_daily_usage d ON d.scope = u.scope AND d.subject = u.subject AND d.day =
            """
        let query: PostgresQuery
        if let subjects {
            let scopes = subjects.map(\.scope.rawValue)
            let names = subjects.map(\.name)
            query = "\(unescaped: select) \(day) WHERE (u.scope, u.subject) IN (SELECT * FROM unnest(\(scopes)::text[], \(names)::text[]))"
        } else {
            let order = """
                ORDER BY u.stored_bytes DESC, CASE u.scope WHEN 'global' THEN 0 WHEN 'server' THEN 1 ELSE 2 END, day_bytes DESC,
                u.subject COLLATE "C"
                """
            query = "\(unescaped: select) \(day) \(unescaped: order)"
        }
        var usage: [QuotaUsage] = []
        for try await (scopeName, name, storedBytes, storedFiles, dayBytes, dayFiles) in try await connection.query(query, logger: logger)
            .decode((String, String, Int64, Int64, Int64, Int64).self)
        {
            guard let scope = QuotaScope(rawValue: scopeName) else {
                throw PostgresLedgerError.corruptRow(table: "quota_usage", id: "\(scopeName):\(name)")
            }
            usage.append(
                QuotaUsage(
                    subject: QuotaSubject(scope, name),
                    storedBytes: storedBytes,
                    storedFiles: storedFiles,
                    dayBytes: dayBytes,
                    dayFiles: dayFiles
                )
            )
        }
        guard let subjects else { return usage }
        return subjects.compactMap { subject in usage.first { $0.subject == subject } }
    }

    /// Takes the advisory lock of each subject, in one order for every transaction (sorted, each once), held until
    /// the caller's transaction ends.
    func lockQuotaSubjects(_ subjects: [QuotaSubject], _ connection: PostgresConnection) async throws {
        try await self.lock(subjects.map(\.lockName), seed: LockKey.quotaSubjectSeed, connection)
    }

    /// Throws ``BrokerError/quotaExceeded(_:)`` when `entry` does not fit in its quotas, inside the caller's
    /// transaction, with its subjects locked until that transaction ends.
    func enforceQuota(of entry: HandOffEntry, _ connection: PostgresConnection, locked: Bool = false) async throws {
        guard let check = entry.quota else { return }
        let subjects = check.subjects
        if !locked {
            try await self.lockQuotaSubjects(subjects, connection)
        }
        let transfer = entry.transfer
        let usage = try await Self.quotaUsage(subjects, day: QuotaDay.of(transfer.createdAt), connection, self.logger)
        if let refusal = check.refusal(adding: transfer.size, at: transfer.createdAt, usage: usage) {
            throw BrokerError.quotaExceeded(refusal)
        }
    }
}
