import Crypto
public import Foundation

/// The JSON body of one event (README, "Notifications"): built inside the transaction that publishes the event and
/// kept in the outbox as it is, so every attempt posts the same bytes.
struct NotificationBody: Encodable {
    /// The event id (also `X-Airlock-Delivery`).
    var id: String
    /// The event name (also `X-Airlock-Event`).
    var event: String
    /// When it happened, ISO 8601 in UTC with milliseconds.
    var at: String
    /// The node that published it.
    var node: String?
    /// The transfer, as it is after the change (transfer events).
    var transfer: Transfer?
    /// The event's details (a release's reason; a reload's version, error and file).
    var details: [String: String]?

    /// A transfer in an event's body.
    struct Transfer: Encodable {
        var id: String
        var server: String
        var sender: String
        var recipients: [String]
        /// The recipients who already downloaded it (served downloads in the ledger), sorted.
        var downloadedBy: [String]
        /// How many downloads were served, anonymous XEP-0363 GETs included.
        var downloads: Int
        var filename: String
        var size: Int64
        var sha256: String
        var verdict: String
        var signature: String?
        var reason: String?
        var state: String
        var signatureVersion: String
        var createdAt: String
        var updatedAt: String
    }

    /// The body of `event`; `transfer` is the transfer it concerns (nil for signature events) with its recipients
    /// and served downloads.
    init(_ event: NotificationEvent, node: String?, transfer: NotificationSubject?) {
        self.id = event.id
        self.event = event.kind.rawValue
        self.at = Self.timestamp(event.at)
        self.node = node
        self.details = event.details.isEmpty ? nil : event.details
        self.transfer = transfer.map { subject in
            let record = subject.record
            let served = subject.downloads.filter { (200..<300).contains($0.status) }
            return Transfer(
                id: record.id,
                server: record.server,
                sender: record.sender,
                recipients: subject.recipients,
                downloadedBy: Set(served.compactMap(\.recipient)).sorted(),
                downloads: served.count,
                filename: record.filename,
                size: record.size,
                sha256: record.sha256,
                verdict: record.verdict.rawValue,
                signature: record.signature,
                reason: record.reason,
                state: record.state.rawValue,
                signatureVersion: record.signatureVersion,
                createdAt: Self.timestamp(record.createdAt),
                updatedAt: Self.timestamp(record.updatedAt)
            )
        }
    }

    /// The body as JSON text, keys sorted.
    func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }

    /// `2026-11-22T07:41:12.987Z`.
    static func timestamp(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }
}

/// The transfer an event concerns, as the ledger read it inside the publishing transaction.
struct NotificationSubject: Sendable {
    /// The row, after the change.
    var record: TransferRecord
    /// Its recipients, sorted.
    var recipients: [String]
    /// Its downloads.
    var downloads: [DownloadRecord]
}

/// `X-Airlock-Signature`: HMAC-SHA256 of the raw body with the webhook's secret.
public enum WebhookSignature {
    /// The header's name.
    public static let header = "X-Airlock-Signature"

    /// `sha256=<hex HMAC-SHA256 of body keyed with secret>`.
    public static func sign(_ body: some DataProtocol, secret: String) -> String {
        let code = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Data(secret.utf8)))
        return "sha256=" + code.map { String(format: "%02x", $0) }.joined()
    }
}
