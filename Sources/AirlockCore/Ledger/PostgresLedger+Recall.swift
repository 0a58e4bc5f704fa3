public import Foundation
import PostgresNIO

extension PostgresLedger {
    public func claimRetroscanCandidates(
        since: Date,
        signatureVersion: String,
        limit: Int,
        excluding handled: Set<String>,
        node: String,
        now: Date,
        leaseUntil: Date
    ) async throws -> [RetroscanCandidate] {
        let nowValue = Self.milliseconds(now)
        // Leases that ran out, dropped apart from the claim and without waiting for a row another claim holds: a
        // delete that locked rows in its own order inside the claim could wait on a claim that waits on it.
        try await self.client.query(
            """
            DELETE FROM retroscan_lease WHERE ctid IN
            (SELECT ctid FROM retroscan_lease WHERE leased_until <= \(nowValue) FOR UPDATE SKIP LOCKED)
            """,
            logger: self.logger
        )
        // Another node may read the same contents as unleased and lease them first: its insert makes this one wait
        // for its commit, and the lease it holds is then left alone and not returned. Read again then, so losing a
        // race is not taken for the end of the pass; bounded, as every round that returns nothing saw leases more.
        // One transaction per round: a conflicting row stays locked until its transaction ends (even when the
        // update's condition leaves it alone), and rounds lock in their own orders, so a claim must not hold one
        // round's rows while it locks the next's.
        let handledDigests = Array(handled)
        for _ in 0..<8 {
            let (candidates, mine) = try await self.transaction { connection -> ([RetroscanCandidate], Set<String>) in
                let rows = try await connection.query(
                    """
                    SELECT sha256, MAX(size), MAX(created_at) AS newest FROM transfer
                    WHERE state = 'stored' AND created_at >= \(Self.milliseconds(since))
                    AND NOT EXISTS (SELECT 1 FROM verdict_cache v WHERE v.sha256 = transfer.sha256 AND v.signature_version = \(signatureVersion))
                    AND NOT EXISTS (SELECT 1 FROM retroscan_lease l WHERE l.sha256 = transfer.sha256 AND l.signature_version = \(signatureVersion)
                        AND l.node <> \(node) AND l.leased_until > \(nowValue))
                    AND sha256 <> ALL(\(handledDigests)::text[])
                    GROUP BY sha256 ORDER BY newest DESC, sha256 LIMIT \(Int64(limit))
                    """,
                    logger: self.logger
                )
                var candidates: [RetroscanCandidate] = []
                for try await (sha256, size, newest) in rows.decode((String, Int64, Int64).self) {
                    candidates.append(RetroscanCandidate(sha256: sha256, size: size, newest: Self.date(newest)))
                }
                guard !candidates.isEmpty else { return ([], []) }
                // Leased in digest order, so two claims never wait for each other in a circle.
                let leased = try await connection.query(
                    """
                    INSERT INTO retroscan_lease (sha256, signature_version, node, leased_until)
                    SELECT digest, \(signatureVersion), \(node), \(Self.milliseconds(leaseUntil)) FROM unnest(\(candidates.map(\.sha256).sorted())) AS digest
                    ON CONFLICT (sha256, signature_version) DO UPDATE SET node = excluded.node, leased_until = excluded.leased_until
                    WHERE retroscan_lease.node = excluded.node OR retroscan_lease.leased_until <= \(nowValue)
                    RETURNING sha256
                    """,
                    logger: self.logger
                )
                var mine: Set<String> = []
                for try await sha256 in leased.decode(String.self) { mine.insert(sha256) }
                return (candidates, mine)
            }
            if candidates.isEmpty { return [] }
            if !mine.isEmpty { return candidates.filter { mine.contains($0.sha256) } }
        }
        return []
    }

    public func retroscanProgress(since: Date, signatureVersion: String) async throws -> RetroscanProgress {
        try await self.transaction { connection in
            var checked = 0
            var pending = 0
            let rows = try await connection.query(
                """
                SELECT COUNT(DISTINCT sha256) FILTER (WHERE checked), COUNT(DISTINCT sha256) FILTER (WHERE NOT checked) FROM (
                    SELECT sha256, EXISTS (SELECT 1 FROM verdict_cache v WHERE v.sha256 = transfer.sha256
                    AND v.signature_version = \(signatureVersion)) AS checked
                    FROM transfer WHERE state = 'stored' AND created_at >= \(Self.milliseconds(since))) AS window_content
                """,
                logger: self.logger
            )
            for try await (done, left) in rows.decode((Int64, Int64).self) {
                checked = Int(done)
                pending = Int(left)
            }
            var recalled = 0
            let counted = try await connection.query(
                "SELECT COUNT(*) FROM transfer WHERE recalled_at IS NOT NULL AND created_at >= \(Self.milliseconds(since))",
                logger: self.logger
            )
            for try await count in counted.decode(Int64.self) { recalled = Int(count) }
            return RetroscanProgress(checked: checked, pending: pending, recalled: recalled)
        }
    }

    public func recordChecked(_ verdict: VerdictCacheRecord) async throws {
        try await self.transaction { connection in
            try await Self.save(verdict, connection, self.logger)
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
        let recalled = try await self.transaction { connection in
            // The content lock a hand-off of the same bytes and their removal take: neither interleaves.
            try await connection.query("SELECT pg_advisory_xact_lock(hashtextextended(\(sha256), 0))", logger: self.logger)
            let victims = try await Self.transfers(
                connection,
                "WHERE sha256 = \(sha256) AND state = 'stored' ORDER BY created_at, id FOR UPDATE",
                self.logger
            )
            // The bytes are encrypted under the content lock alone (it keeps hand-offs and removals of this content
            // out); the audit head, which every hand-off on every node needs, only for the rows.
            for transfer in victims {
                try await Self.offThePool { try quarantine(transfer) }
            }
            try await connection.query("SELECT pg_advisory_xact_lock(\(LockKey.auditHead))", logger: self.logger)
            var recalled: [RecalledTransfer] = []
            for var transfer in victims {
                transfer.recall(verdict: verdict, signatureVersion: signatureVersion, at: date)
                try await connection.query(
                    """
                    UPDATE transfer SET state = 'quarantined', verdict = \(verdict.kind.rawValue), signature = \(verdict.signature),
                    reason = \(verdict.reason), signature_version = \(signatureVersion), recalled_at = \(Self.milliseconds(date)),
                    updated_at = \(Self.milliseconds(date)) WHERE id = \(transfer.id)
                    """,
                    logger: self.logger
                )
                let recipients = try await Self.recipients(of: transfer.id, connection, self.logger)
                var downloaded: [String] = []
                let rows = try await connection.query(
                    """
                    SELECT who FROM (SELECT DISTINCT COALESCE(recipient, '(XEP-0363 download)') AS who FROM download
                    WHERE transfer_id = \(transfer.id) AND status IN (200, 206)) AS served ORDER BY who COLLATE "C"
                    """,
                    logger: self.logger
                )
                for try await who in rows.decode(String.self) { downloaded.append(who) }
                try await self.append(RecalledTransfer.auditEvent(transfer, downloadedBy: downloaded, actor: actor), connection)
                try await self.publish([RecalledTransfer.notification(transfer, downloadedBy: downloaded)], connection)
                recalled.append(RecalledTransfer(transfer: transfer, recipients: recipients, downloadedBy: downloaded))
            }
            try await connection.query(
                "DELETE FROM verdict_cache WHERE sha256 = \(sha256) AND scanner_failure IS NULL",
                logger: self.logger
            )
            // Nothing is left to check: whichever node leased the content, with whichever version.
            try await connection.query("DELETE FROM retroscan_lease WHERE sha256 = \(sha256)", logger: self.logger)
            return recalled
        }
        if !recalled.isEmpty { self.notifications.enqueued() }
        return recalled
    }
}
