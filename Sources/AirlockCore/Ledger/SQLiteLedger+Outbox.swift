public import Foundation
import GRDB

// The notification outbox on SQLite (migration v6). One process writes a SQLite ledger, so a lease only guards
// against that process's own overlapping claims.

extension SQLiteLedger {
    /// Writes the outbox rows of `events` inside the caller's transaction. `subject` is the transfer they concern
    /// as the caller just wrote it; when nil, a transfer event reads its transfer here.
    func publish(_ events: [NotificationEvent], _ db: Database, subject: NotificationSubject? = nil) throws {
        for event in events {
            let webhooks = self.notifications.subscribers(of: event.kind)
            guard !webhooks.isEmpty else { continue }
            var about = subject
            if about == nil, let transferId = event.transferId {
                about = try Self.subject(transferId, db)
                guard about != nil else { throw BrokerError.transferNotFound(transferId) }
            }
            for var row in try OutboxRecord.rows(for: event, webhooks: webhooks, node: self.node, subject: about) {
                try row.insert(db)
            }
        }
    }

    /// A transfer with its recipients and downloads, as the body of an event shows it.
    static func subject(_ transferId: String, _ db: Database) throws -> NotificationSubject? {
        guard let record = try TransferRecord.fetchOne(db, key: transferId) else { return nil }
        return NotificationSubject(
            record: record,
            recipients: try RecipientRecord.filter(Column("transferId") == transferId).order(Column("recipient")).fetchAll(db).map(\.recipient),
            downloads: try DownloadRecord.filter(Column("transferId") == transferId).order(Column("id")).fetchAll(db)
        )
    }

    public func enqueueNotification(_ event: NotificationEvent) async throws {
        try await self.writer.write { db in try self.publish([event], db) }
        self.notifications.enqueued()
    }

    public func claimNotifications(webhooks: [String], now: Date, leaseUntil: Date, limit: Int) async throws -> OutboxClaim {
        guard !webhooks.isEmpty, limit > 0 else { return OutboxClaim(deliveries: [], nextDue: nil) }
        let list = Array(repeating: "?", count: webhooks.count).joined(separator: ", ")
        return try await self.writer.write { db in
            let rows = try OutboxRecord.fetchAll(
                db,
                sql: """
                    SELECT * FROM notificationOutbox AS o
                    WHERE o.deliveredAt IS NULL AND o.webhook IN (\(list)) AND o.nextAttemptAt <= ?
                    AND (o.leasedUntil IS NULL OR o.leasedUntil <= ?)
                    AND NOT EXISTS (SELECT 1 FROM notificationOutbox AS e WHERE e.webhook = o.webhook AND e.orderKey = o.orderKey
                        AND e.deliveredAt IS NULL AND e.id < o.id)
                    ORDER BY o.id LIMIT ?
                    """,
                arguments: StatementArguments(webhooks) + [now, now, limit]
            )
            var deliveries: [OutboxDelivery] = []
            for row in rows {
                guard let id = row.id else { continue }
                try OutboxRecord.filter(key: id).updateAll(db, Column("leasedUntil").set(to: leaseUntil), Column("leasedBy").set(to: self.node ?? ""))
                deliveries.append(
                    OutboxDelivery(id: id, eventId: row.eventId, event: row.event, webhook: row.webhook, payload: row.payload, attempts: row.attempts)
                )
            }
            let nextDue = try Date.fetchOne(
                db,
                sql: """
                    SELECT MIN(nextAttemptAt) FROM notificationOutbox
                    WHERE deliveredAt IS NULL AND webhook IN (\(list)) AND nextAttemptAt > ? AND leasedUntil IS NULL
                    """,
                arguments: StatementArguments(webhooks) + [now]
            )
            return OutboxClaim(deliveries: deliveries, nextDue: nextDue)
        }
    }

    public func completeNotification(id: Int64, _ outcome: OutboxOutcome) async throws {
        try await self.writer.write { db in
            let row = OutboxRecord.filter(key: id)
            switch outcome {
            case .delivered(let at):
                try row.updateAll(
                    db,
                    Column("deliveredAt").set(to: at),
                    Column("leasedUntil").set(to: nil),
                    Column("leasedBy").set(to: nil),
                    Column("lastError").set(to: nil)
                )
            case .failed(let error, let retryAt):
                try row.updateAll(
                    db,
                    Column("attempts") += 1,
                    Column("nextAttemptAt").set(to: retryAt),
                    Column("lastError").set(to: error),
                    Column("leasedUntil").set(to: nil),
                    Column("leasedBy").set(to: nil)
                )
            }
        }
    }

    public func releaseNotificationLeases() async throws {
        try await self.writer.write { db in
            // One process writes a SQLite ledger: every lease is this process's own.
            try OutboxRecord.filter(Column("leasedUntil") != nil && Column("deliveredAt") == nil)
                .updateAll(db, Column("leasedUntil").set(to: nil), Column("leasedBy").set(to: nil))
        }
    }

    @discardableResult
    public func pruneNotifications(deliveredBefore date: Date) async throws -> Int {
        try await self.writer.write { db in
            try OutboxRecord.filter(Column("deliveredAt") != nil && Column("deliveredAt") < date).deleteAll(db)
        }
    }

    public func pendingNotifications(webhooks: [String]) async throws -> Int {
        try await self.writer.read { db in
            try OutboxRecord.filter(Column("deliveredAt") == nil && webhooks.contains(Column("webhook"))).fetchCount(db)
        }
    }
}
