public import Foundation

/// The transfer JSON of DESIGN §3, shared by the HTTP API and `airlock … --json`.
public struct TransferDocument: Encodable, Sendable {
    public var id: String
    public var server: String
    public var sender: String
    public var recipients: [String]
    public var filename: String
    public var size: Int64
    public var sha256: String
    public var declaredType: String?
    public var detectedType: String?
    public var verdict: String
    public var signature: String?
    public var reason: String?
    public var state: String
    public var createdAt: Date
    /// On creation: one download URL per recipient when clean.
    public var downloads: [Download]?

    /// One recipient's download URL.
    public struct Download: Encodable, Sendable {
        public var recipient: String
        public var url: String
        public var expiresAt: Date

        /// Creates a download entry.
        public init(recipient: String, url: String, expiresAt: Date) {
            self.recipient = recipient
            self.url = url
            self.expiresAt = expiresAt
        }
    }

    /// The document of a transfer row.
    public init(_ record: TransferRecord, recipients: [String], downloads: [Ledger.DownloadGrant]? = nil) {
        self.id = record.id
        self.server = record.server
        self.sender = record.sender
        self.recipients = recipients
        self.filename = record.filename
        self.size = record.size
        self.sha256 = record.sha256
        self.declaredType = record.declaredType
        self.detectedType = record.detectedType
        self.verdict = record.verdict.rawValue
        self.signature = record.signature
        self.reason = record.reason
        self.state = record.state.rawValue
        self.createdAt = record.createdAt
        self.downloads = downloads?.map { Download(recipient: $0.recipient, url: $0.url, expiresAt: $0.expiresAt) }
    }

    /// The encoder every JSON output uses: ISO 8601 dates, sorted keys.
    public static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()
}
