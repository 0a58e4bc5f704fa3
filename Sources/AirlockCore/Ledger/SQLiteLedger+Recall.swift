public import Foundation
import GRDB

extension SQLiteLedger {
    public func claimRetroscanCandidates(
        since: Date,
        signatureVersion: String,
        limit: Int,
        excluding handled: Set<String>,
        node: String,
        now: Date,
        leaseUntil: Date
    ) async throws -> [RetroscanCandidate] {
        try await self.writer.write { db in
            try db.execute(sql: "DELETE FROM retroscanLease WHERE leasedUntil <= ?", arguments: [now.databaseArgument])
            // One writer at a time: what this transaction reads as unleased is still unleased when it writes.
            let candidates = try Row.fetchAll(
                db,
                sql: """
                    SELECT sha256, MAX(size) AS size, MAX(createdAt) AS newest FROM transfer
                    WHERE state = 'stored' AND createdAt >= ?
                    AND NOT EXISTS (SELECT 1 FROM verdictCache v WHERE v.sha256 = transfer.sha256 AND v.signatureVersion = ?)
                    AND NOT EXISTS (SELECT 1 FROM retroscanLease l WHERE l.sha256 = transfer.sha256 AND l.signatureVersion = ?
                        AND l.node <> ?)
                    AND sha256 NOT IN (SELECT value FROM json_each(?))
                    GROUP BY sha256 ORDER BY newest DESC, sha256 LIMIT ?
                    """,
                arguments: [since.databaseArgument, signatureVersion, signatureVersion, node, Self.jsonArray(handled), limit]
            ).map { row in
                RetroscanCandidate(sha256: row["sha256"], size: row["size"], newest: row["newest"])
            }
            let lease = try db.cachedStatement(
                sql: """
                    INSERT INTO retroscanLease (sha256, signatureVersion, node, leasedUntil) VALUES (?, ?, ?, ?)
                    ON CONFLICT (sha256, signatureVersion) DO UPDATE SET leasedUntil = excluded.leasedUntil
                    """
            )
            for candidate in candidates {
                try lease.execute(arguments: [candidate.sha256, signatureVersion, node, leaseUntil.databaseArgument])
            }
            return candidates
        }
    }

    /// `digests` as a JSON array of strings, for `json_each` (hex digests need no escaping; anything else is
    /// escaped all the same).
    static func jsonArray(_ digests: Set<String>) -> String {
        let data = (try? JSONEncoder().encode(Array(digests))) ?? Data("[]".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    public func retroscanProgress(since: Date, signatureVersion: String) async throws -> RetroscanProgress {
        try await self.writer.read { db in
            let row = try Row.fetchOne(
                db,
                sql: """
                    SELECT COUNT(DISTINCT CASE WHEN checked THEN sha256 END) AS checked,
                    COUNT(DISTINCT CASE WHEN NOT checked THEN sha256 END) AS pending FROM (
                        SELECT sha256, EXISTS (SELECT 1 FROM verdictCache v WHERE v.sha256 = transfer.sha256 AND v.signatureVersion = ?) AS checked
                        FROM transfer WHERE state = 'stored' AND createdAt >= ?)
                    """,
                arguments: [signatureVersion, since.databaseArgument]
            )
            let recalled = try Int.fetchOne(
                db,
                sql: "SELECT COUNT(*) FROM transfer WHERE recalledAt IS NOT NULL AND createdAt >= ?",
                arguments: [since.databaseArgument]
            )
            return RetroscanProgress(checked: row?["checked"] ?? 0, pending: row?["pending"] ?? 0, recalled: recalled ?? 0)
        }
    }

    public func recordChecked(_ verdict: VerdictCacheRecord) async throws {
        try await self.writer.write { db in
            try verdict.saveWithCachedStatement(db)
        }
    }

    public func recall(
        sha256: String,
        verdict: Verdict,
        signatureVersion: String,
        at date: Date,
        actor: String,
        quarantine: @escaping @Sendable (TransferRecord) throws -> Void
    ) async throws -> [RecalledTransfer] {
        let recalled = try await self.writer.write { db in
            let victims = try TransferRecord.filter(Column("sha256") == sha256 && Column("state") == TransferState.stored).order(Column("createdAt"))
                .fetchAll(db)
            var recalled: [RecalledTransfer] = []
            for var transfer in victims {
                try quarantine(transfer)
                transfer.recall(verdict: verdict, signatureVersion: signatureVersion, at: date)
                try transfer.update(db)
                let recipients = try String.fetchAll(
                    db,
                    sql: "SELECT recipient FROM transferRecipient WHERE transferId = ? ORDER BY recipient",
                    arguments: [transfer.id]
                )
                let downloaded = try String.fetchAll(
                    db,
                    sql: """
                        SELECT DISTINCT COALESCE(recipient, '(XEP-0363 download)') FROM download
                        WHERE transferId = ? AND status IN (200, 206) ORDER BY 1
                        """,
                    arguments: [transfer.id]
                )
                let event = RecalledTransfer.auditEvent(transfer, downloadedBy: downloaded, actor: actor)
                try self.append(event, db)
                try self.publish([RecalledTransfer.notification(transfer, downloadedBy: downloaded)], db)
                recalled.append(RecalledTransfer(transfer: transfer, recipients: recipients, downloadedBy: downloaded))
            }
            // The clean verdicts these bytes had are wrong now; remembered scanner failures stay.
            try db.execute(sql: "DELETE FROM verdictCache WHERE sha256 = ? AND scannerFailure IS NULL", arguments: [sha256])
            // Nothing is left to check: whichever node leased the content, with whichever version.
            try db.execute(sql: "DELETE FROM retroscanLease WHERE sha256 = ?", arguments: [sha256])
            return recalled
        }
        if !recalled.isEmpty { self.notifications.enqueued() }
        return recalled
    }
}

extension TransferRecord {
    /// The row after a recall: quarantined with the new verdict, by `signatureVersion`, at `date`.
    mutating func recall(verdict: Verdict, signatureVersion: String, at date: Date) {
        self.state = .quarantined
        self.verdict = verdict.kind
        self.signature = verdict.signature
        self.reason = verdict.reason
        self.signatureVersion = signatureVersion
        self.recalledAt = date
        self.updatedAt = date
    }
}

extension RecalledTransfer {
    /// The `transfer.recalled` webhook event of a recalled transfer (its body carries the transfer as it is now,
    /// with its downloads).
    static func notification(_ transfer: TransferRecord, downloadedBy: [String]) -> NotificationEvent {
        var details = ["downloadedBy": downloadedBy.joined(separator: ","), "signatureVersion": transfer.signatureVersion]
        details["signature"] = transfer.signature
        details["reason"] = transfer.reason
        return NotificationEvent(.transferRecalled, transferId: transfer.id, at: transfer.recalledAt ?? transfer.updatedAt, details: details)
    }

    /// The `transfer.recalled` audit entry of a recalled transfer.
    static func auditEvent(_ transfer: TransferRecord, downloadedBy: [String], actor: String) -> AuditEvent {
        var details = [
            "previousState": TransferState.stored.rawValue, "verdict": transfer.verdict.rawValue, "signatureVersion": transfer.signatureVersion,
            "downloadedBy": downloadedBy.joined(separator: ","), "sha256": transfer.sha256,
        ]
        details["signature"] = transfer.signature
        details["reason"] = transfer.reason
        return AuditEvent(
            at: transfer.recalledAt ?? transfer.updatedAt,
            actor: actor,
            action: "transfer.recalled",
            transferId: transfer.id,
            details: details
        )
    }
}
