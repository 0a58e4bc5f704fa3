import AirlockCore
import Foundation

/// The transfer JSON of DESIGN §3.
struct TransferJSON: Encodable {
    var id: String
    var server: String
    var sender: String
    var recipients: [String]
    var filename: String
    var size: Int64
    var sha256: String
    var declaredType: String?
    var detectedType: String?
    var verdict: String
    var signature: String?
    var reason: String?
    var state: String
    var createdAt: Date
    var downloads: [DownloadJSON]?

    struct DownloadJSON: Encodable {
        var recipient: String
        var url: String
        var expiresAt: Date
    }

    init(_ record: TransferRecord, recipients: [String], downloads: [Broker.DownloadGrant]? = nil) {
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
        self.downloads = downloads?.map { DownloadJSON(recipient: $0.recipient, url: $0.url, expiresAt: $0.expiresAt) }
    }
}

/// JSON responses with ISO 8601 dates and stable key order.
enum JSONResponse {
    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()
}
