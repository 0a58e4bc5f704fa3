public import Foundation
import Logging
import PostgresNIO

// The notification outbox on PostgreSQL (migration pg4). Several nodes deliver from one table: a claim takes its
// rows with `FOR UPDATE SKIP LOCKED` and leases them to its node for a while, so no two nodes post the same row at
// once, and a node that dies leaves rows that another takes once the lease has run out.

extension PostgresLedger {
    /// Migration pg4: the outbox table.
    static let outboxMigration = [
        """
        CREATE TABLE notification_outbox (
            id BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL, event TEXT NOT NULL, webhook TEXT NOT NULL, order_key TEXT NOT NULL,
            payload TEXT NOT NULL, created_at BIGINT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at BIGINT NOT NULL,
            leased_until BIGINT, leased_by TEXT, delivered_at BIGINT, last_error TEXT, UNIQUE (event_id, webhook))
        """,
        "CREATE INDEX notification_outbox_pending ON notification_outbox (webhook, order_key, id) WHERE delivered_at IS NULL",
    ]

    /// Writes the outbox rows of `events` inside the caller's transaction. `subject` is the transfer they concern
    /// as the caller just wrote it; when nil, a transfer event reads its transfer here (locking its row, so the
    /// events of one transfer take their ids in commit order).
    func publish(_ events: [NotificationEvent], _ connection: PostgresConnection, subject: NotificationSubject? = nil) async throws {
        for event in events {
            let webhooks = self.notifications.subscribers(of: event.kind)
            guard !webhooks.isEmpty else { continue }
            var about = subject
            if about == nil, let transferId = event.transferId {
                about = try await self.subject(transferId, connection)
                guard about != nil else { throw BrokerError.transferNotFound(transferId) }
            }
            for row in try OutboxRecord.rows(for: event, webhooks: webhooks, node: self.node, subject: about) {
                try await connection.query(
                    """
                    INSERT INTO notification_outbox (event_id, event, webhook, order_key, payload, created_at, attempts, next_attempt_at)
                    VALUES (\(row.eventId), \(row.event), \(row.webhook), \(row.orderKey), \(row.payload), \(Self.milliseconds(row.createdAt)),
                    0, \(Self.milliseconds(row.nextAttemptAt)))
                    """,
                    logger: self.logger
                )
            }
        }
    }

    /// A transfer with its recipients and downloads, as the body of an event shows it.
    private func subject(_ transferId: String, _ connection: PostgresConnection) async throws -> NotificationSubject? {
        guard let record = try await Self.transfers(connection, "WHERE id = \(transferId) FOR UPDATE", self.logger).first else { return nil }
        var downloads: [DownloadRecord] = []
        for try await (recipient, at, remoteAddress, bytes, status) in try await connection.query(
            "SELECT recipient, at, remote_address, bytes, status FROM download WHERE transfer_id = \(transferId) ORDER BY id",
            logger: self.logger
        ).decode((String?, Int64, String?, Int64, Int32).self) {
            downloads.append(
                DownloadRecord(
                    transferId: transferId,
                    recipient: recipient,
                    at: Self.date(at),
                    remoteAddress: remoteAddress,
                    bytes: bytes,
                    status: Int(status)
                )
            )
        }
        return NotificationSubject(
            record: record,
            recipients: try await Self.recipients(of: transferId, connection, self.logger),
            downloads: downloads
        )
    }

    public func enqueueNotification(_ event: NotificationEvent) async throws {
        try await self.transaction { connection in try await self.publish([event], connection) }
        self.notifications.enqueued()
    }

    public func claimNotifications(webhooks: [String], now: Date, leaseUntil: Date, limit: Int) async throws -> OutboxClaim {
        guard !webhooks.isEmpty, limit > 0 else { return OutboxClaim(deliveries: [], nextDue: nil) }
        let nowValue = Self.milliseconds(now)
        return try await self.transaction { connection in
            var deliveries: [OutboxDelivery] = []
            // A row another node is claiming is skipped, not waited for; one it claimed is leased, so left out.
            let rows = try await connection.query(
                """
                WITH claimable AS (
                    SELECT o.id FROM notification_outbox AS o
                    WHERE o.delivered_at IS NULL AND o.webhook = ANY(\(webhooks)) AND o.next_attempt_at <= \(nowValue)
                    AND (o.leased_until IS NULL OR o.leased_until <= \(nowValue))
                    AND NOT EXISTS (SELECT 1 FROM notification_outbox AS e WHERE e.webhook = o.webhook AND e.order_key = o.order_key
                        AND e.delivered_at IS NULL AND e.id < o.id)
                    ORDER BY o.id LIMIT \(Int64(limit)) FOR UPDATE SKIP LOCKED)
                UPDATE notification_outbox AS n SET leased_until = \(Self.milliseconds(leaseUntil)), leased_by = \(self.node ?? "")
                FROM claimable WHERE n.id = claimable.id
                RETURNING n.id, n.event_id, n.event, n.webhook, n.payload, n.attempts
                """,
                logger: self.logger
            )
            for try await (id, eventId, event, webhook, payload, attempts) in rows.decode((Int64, String, String, String, String, Int32).self) {
                deliveries.append(OutboxDelivery(id: id, eventId: eventId, event: event, webhook: webhook, payload: payload, attempts: Int(attempts)))
            }
            var nextDue: Date?
            for try await due in try await connection.query(
                """
                SELECT MIN(next_attempt_at) FROM notification_outbox
                WHERE delivered_at IS NULL AND webhook = ANY(\(webhooks)) AND next_attempt_at > \(nowValue) AND leased_until IS NULL
                """,
                logger: self.logger
            ).decode(Int64?.self) {
                nextDue = due.map(Self.date)
            }
            return OutboxClaim(deliveries: deliveries.sorted { $0.id < $1.id }, nextDue: nextDue)
        }
    }

    public func completeNotification(id: Int64, _ outcome: OutboxOutcome) async throws {
        switch outcome {
        case .delivered(let at):
            try await self.client.query(
                """
                UPDATE notification_outbox SET delivered_at = \(Self.milliseconds(at)), leased_until = NULL, leased_by = NULL, last_error = NULL
                WHERE id = \(id)
                """,
                logger: self.logger
            )
        case .failed(let error, let retryAt):
            try await self.client.query(
                """
                UPDATE notification_outbox SET attempts = attempts + 1, next_attempt_at = \(Self.milliseconds(retryAt)), last_error = \(error),
                leased_until = NULL, leased_by = NULL WHERE id = \(id)
                """,
                logger: self.logger
            )
        }
    }

    public func releaseNotificationLeases() async throws {
        try await self.client.query(
            "UPDATE notification_outbox SET leased_until = NULL, leased_by = NULL WHERE leased_by = \(self.node ?? "") AND delivered_at IS NULL",
            logger: self.logger
        )
    }

    @discardableResult
    public func pruneNotifications(deliveredBefore date: Date) async throws -> Int {
        let rows = try await self.client.query(
            """
            WITH pruned AS (DELETE FROM notification_outbox WHERE delivered_at IS NOT NULL AND delivered_at < \(Self.milliseconds(date)) RETURNING 1)
            SELECT count(*) FROM pruned
            """,
            logger: self.logger
        )
        for try await count in rows.decode(Int64.self) { return Int(count) }
        return 0
    }

    public func pendingNotifications(webhooks: [String]) async throws -> Int {
        let rows = try await self.client.query(
            "SELECT count(*) FROM notification_outbox WHERE delivered_at IS NULL AND webhook = ANY(\(webhooks))",
            logger: self.logger
        )
        for try await count in rows.decode(Int64.self) { return Int(count) }
        return 0
    }

    // MARK: Copying

    /// Every outbox row, by id.
    static func outboxRows(_ connection: PostgresConnection, _ logger: Logger) async throws -> [OutboxRecord] {
        var records: [OutboxRecord] = []
        let rows = try await connection.query(
            """
            SELECT id, event_id, event, webhook, order_key, payload, created_at, attempts, next_attempt_at, leased_until, leased_by,
            delivered_at, last_error FROM notification_outbox ORDER BY id
            """,
            logger: logger
        )
        for try await row in rows {
            let (id, eventId, event, webhook, orderKey, payload, createdAt, attempts, nextAttemptAt, leasedUntil, leasedBy, deliveredAt, lastError) =
                try row.decode((Int64, String, String, String, String, String, Int64, Int32, Int64, Int64?, String?, Int64?, String?).self)
            records.append(
                OutboxRecord(
                    id: id,
                    eventId: eventId,
                    event: event,
                    webhook: webhook,
                    orderKey: orderKey,
                    payload: payload,
                    createdAt: Self.date(createdAt),
                    attempts: Int(attempts),
                    nextAttemptAt: Self.date(nextAttemptAt),
                    leasedUntil: leasedUntil.map(Self.date),
                    leasedBy: leasedBy,
                    deliveredAt: deliveredAt.map(Self.date),
                    lastError: lastError
                )
            )
        }
        return records
    }

    /// Writes copied outbox rows as they are (ids included), then moves the id sequence past them.
    static func insertOutboxRows(_ records: [OutboxRecord], _ connection: PostgresConnection, _ logger: Logger) async throws {
        for row in records {
            try await connection.query(
                """
                INSERT INTO notification_outbox (id, event_id, event, webhook, order_key, payload, created_at, attempts, next_attempt_at,
                leased_until, leased_by, delivered_at, last_error)
                VALUES (COALESCE(\(row.id), nextval(pg_get_serial_sequence('notification_outbox', 'id'))), \(row.eventId), \(row.event),
                \(row.webhook), \(row.orderKey), \(row.payload), \(Self.milliseconds(row.createdAt)), \(Int32(row.attempts)),
                \(Self.milliseconds(row.nextAttemptAt)), \(row.leasedUntil.map(Self.milliseconds)), \(row.leasedBy),
                \(row.deliveredAt.map(Self.milliseconds)), \(row.lastError))
                """,
                logger: logger
            )
        }
        try await connection.query(
            "SELECT setval(pg_get_serial_sequence('notification_outbox', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM notification_outbox",
            logger: logger
        )
    }
}
