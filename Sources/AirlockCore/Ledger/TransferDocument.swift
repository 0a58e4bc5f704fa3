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
    /// `inspected`, or `opaque` when the inspection could not see the content (encrypted).
    public var contentClass: String
    public var createdAt: Date
    /// When a retro-scan recalled it (issue 15); absent otherwise.
    public var recalledAt: Date?
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
    public init(_ record: TransferRecord, recipients: [String], downloads: [DownloadGrant]? = nil) {
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
        self.contentClass = record.contentClass.rawValue
        self.createdAt = record.createdAt
        self.recalledAt = record.recalledAt
        self.downloads = downloads?.map { Download(recipient: $0.recipient, url: $0.url, expiresAt: $0.expiresAt) }
    }

    /// The document as JSON, byte for byte as ``encoder`` writes it. Written directly when no string in it needs
    /// escaping (printable ASCII without quotes or backslashes: the usual case), which is several times cheaper
    /// than the encoder on every hand-off's response; otherwise through the encoder.
    public func json() throws -> [UInt8] {
        guard let text = self.plainJSON() else { return Array(try Self.encoder.encode(self)) }
        return Array(text.utf8)
    }

    private func plainJSON() -> String? {
        var fields: [String] = []
        func add(_ key: String, _ value: String?) -> Bool {
            guard let value else { return true }
            guard PlainJSON.isPlain(value) else { return false }
            fields.append("\"\(key)\":\"\(value)\"")
            return true
        }
        func list(_ values: [String]) -> String? {
            guard values.allSatisfy(PlainJSON.isPlain) else { return nil }
            return "[" + values.map { "\"\($0)\"" }.joined(separator: ",") + "]"
        }
        guard add("contentClass", self.contentClass) else { return nil }
        fields.append("\"createdAt\":\"\(Self.iso8601(self.createdAt))\"")
        guard add("declaredType", self.declaredType), add("detectedType", self.detectedType) else { return nil }
        if let downloads = self.downloads {
            var entries: [String] = []
            for download in downloads {
                guard PlainJSON.isPlain(download.recipient), PlainJSON.isPlain(download.url) else { return nil }
                entries.append(
                    "{\"expiresAt\":\"\(Self.iso8601(download.expiresAt))\",\"recipient\":\"\(download.recipient)\",\"url\":\"\(download.url)\"}"
                )
            }
            fields.append("\"downloads\":[" + entries.joined(separator: ",") + "]")
        }
        guard add("filename", self.filename), add("id", self.id), add("reason", self.reason), let recipients = list(self.recipients)
        else { return nil }
        if let recalledAt = self.recalledAt {
            fields.append("\"recalledAt\":\"\(Self.iso8601(recalledAt))\"")
        }
        fields.append("\"recipients\":" + recipients)
        guard add("sender", self.sender), add("server", self.server), add("sha256", self.sha256), add("signature", self.signature)
        else { return nil }
        fields.append("\"size\":\(self.size)")
        guard add("state", self.state), add("verdict", self.verdict) else { return nil }
        return "{" + fields.joined(separator: ",") + "}"
    }

    /// `2026-11-22T07:41:12Z`, as the encoder's `.iso8601` strategy writes a date (whole seconds, UTC).
    static func iso8601(_ date: Date) -> String {
        guard let time = CivilTime(date, rounding: .down) else { return date.formatted(.iso8601) }
        return "\(time.year)-\(time.two(time.month))-\(time.two(time.day))T\(time.two(time.hour)):\(time.two(time.minute)):\(time.two(time.second))Z"
    }

    /// The encoder every JSON output uses: ISO 8601 dates, sorted keys.
    public static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }()
}
