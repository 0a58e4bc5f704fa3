public import Foundation
public import GRDB

/// One event for one webhook in the notification outbox (table `notificationOutbox`, PostgreSQL
/// `notification_outbox`).
///
/// One row per (event, webhook), written in the transaction of the change it reports: each webhook's delivery has
/// its own attempts, back-off and lease, a webhook that is down holds back only its own rows, and the order of one
/// transfer's events is kept per webhook by the row id. The body is stored as it is sent; the signature is
/// computed at each attempt with the webhook's current secret, which the ledger never holds.
public struct OutboxRecord: Sendable, Equatable, Codable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "notificationOutbox"

    /// The row id: the order in which events were published.
    public var id: Int64?
    /// The event id, `X-Airlock-Delivery` (the same for every webhook and every attempt).
    public var eventId: String
    /// The event name, `X-Airlock-Event`.
    public var event: String
    /// The webhook's URL.
    public var webhook: String
    /// What delivery keeps in order per webhook: the transfer id, or `""` for events about no transfer.
    public var orderKey: String
    /// The JSON body.
    public var payload: String
    /// When it was published.
    public var createdAt: Date
    /// Failed attempts so far.
    public var attempts: Int
    /// When the next attempt may start.
    public var nextAttemptAt: Date
    /// Until when a node is delivering it (nil when no node is).
    public var leasedUntil: Date?
    /// The node delivering it.
    public var leasedBy: String?
    /// When the webhook accepted it (nil while pending).
    public var deliveredAt: Date?
    /// Why the last attempt failed.
    public var lastError: String?

    /// Creates a pending row.
    public init(
        id: Int64? = nil,
        eventId: String,
        event: String,
        webhook: String,
        orderKey: String,
        payload: String,
        createdAt: Date,
        attempts: Int = 0,
        nextAttemptAt: Date,
        leasedUntil: Date? = nil,
        leasedBy: String? = nil,
        deliveredAt: Date? = nil,
        lastError: String? = nil
    ) {
        self.id = id
        self.eventId = eventId
        self.event = event
        self.webhook = webhook
        self.orderKey = orderKey
        self.payload = payload
        self.createdAt = createdAt
        self.attempts = attempts
        self.nextAttemptAt = nextAttemptAt
        self.leasedUntil = leasedUntil
        self.leasedBy = leasedBy
        self.deliveredAt = deliveredAt
        self.lastError = lastError
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) {
        self.id = inserted.rowID
    }

    /// The rows `event` puts in the outbox: one per webhook in `webhooks`, with the body built from `subject`.
    static func rows(for event: NotificationEvent, webhooks: [String], node: String?, subject: NotificationSubject?) throws -> [OutboxRecord] {
        guard !webhooks.isEmpty else { return [] }
        let payload = try NotificationBody(event, node: node, transfer: subject).json()
        return webhooks.map { webhook in
            OutboxRecord(
                eventId: event.id,
                event: event.kind.rawValue,
                webhook: webhook,
                orderKey: event.transferId ?? "",
                payload: payload,
                createdAt: event.at,
                nextAttemptAt: event.at
            )
        }
    }
}

/// An outbox row claimed for delivery by this node.
public struct OutboxDelivery: Sendable, Equatable {
    /// The row id.
    public var id: Int64
    /// `X-Airlock-Delivery`.
    public var eventId: String
    /// `X-Airlock-Event`.
    public var event: String
    /// Where to post it.
    public var webhook: String
    /// The body.
    public var payload: String
    /// Failed attempts before this one.
    public var attempts: Int
}

/// What ``Ledger/claimNotifications(webhooks:now:leaseUntil:limit:)`` found.
public struct OutboxClaim: Sendable, Equatable {
    /// The rows now leased to this node, at most one per webhook and transfer.
    public var deliveries: [OutboxDelivery]
    /// The earliest time a pending row of these webhooks becomes due, if any row is pending and not yet due.
    public var nextDue: Date?
}

/// How one delivery attempt ended.
public enum OutboxOutcome: Sendable, Equatable {
    /// The webhook answered 2xx at this time.
    case delivered(at: Date)
    /// It did not; try again at `retryAt`.
    case failed(error: String, retryAt: Date)
}
