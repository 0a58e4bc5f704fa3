import Foundation

extension AirlockConfiguration {
    /// `quotas`: how much each uploader and each IM server may upload per day and keep stored (absent: unlimited).
    ///
    /// The uploader is the sender of a native hand-off (`/v1/transfers?sender=`), the `sub` (JID) of a Prosody
    /// `mod_http_file_share` JWT upload, the user hash of an ejabberd upload path, and `unknown` for HMAC v1/v2
    /// uploads that name no one: those share one uploader's quota, in effect the XEP-0363 service's. The server is
    /// the IM server's name in `servers` (`xep0363` for every XEP-0363 upload).
    public struct Quotas: Sendable, Equatable {
        /// `quotas.perUploader`: the limits of each uploader (nil: none).
        public var perUploader: QuotaLimits?
        /// `quotas.perServer`: the limits of each IM server (nil: none).
        public var perServer: QuotaLimits?

        /// Creates quotas; nil for no limit.
        public init(perUploader: QuotaLimits? = nil, perServer: QuotaLimits? = nil) {
            self.perUploader = perUploader
            self.perServer = perServer
        }

        /// Whether no quota is configured.
        public var isEmpty: Bool { self.perUploader == nil && self.perServer == nil }
    }

    /// One subject's limits; each absent one is unlimited.
    public struct QuotaLimits: Sendable, Equatable, Codable {
        /// `dailyBytes`: bytes accepted per UTC day (whatever their verdict; later deletion does not give them back).
        /// Over it: 429 with `Retry-After` (the seconds until the UTC day rolls over).
        public var dailyBytes: Int64?
        /// `totalBytes`: bytes held at once: stored, released or quarantined transfers not yet deleted or purged.
        /// Over it: 507.
        public var totalBytes: Int64?
        /// `dailyFiles`: uploads accepted per UTC day. Over it: 429 with `Retry-After`.
        public var dailyFiles: Int64?

        /// Creates limits; nil for unlimited.
        public init(dailyBytes: Int64? = nil, totalBytes: Int64? = nil, dailyFiles: Int64? = nil) {
            self.dailyBytes = dailyBytes
            self.totalBytes = totalBytes
            self.dailyFiles = dailyFiles
        }

        /// Whether every limit is absent.
        public var isUnlimited: Bool { self.dailyBytes == nil && self.totalBytes == nil && self.dailyFiles == nil }
    }

    /// The quotas a hand-off by `uploader` through `server` must fit in, checked before its body is read (when its
    /// length is known) and again inside the ledger transaction that records it; nil when none is configured.
    public func quotaCheck(uploader: String, server: String) -> QuotaCheck? {
        let check = QuotaCheck(
            uploader: uploader,
            server: server,
            perUploader: self.quotas.perUploader,
            perServer: self.quotas.perServer,
            maxStoredBytes: self.limits.maxStoredBytes
        )
        return check.subjects.isEmpty ? nil : check
    }
}

extension AirlockConfiguration.Quotas {
    init(_ reader: inout ConfigurationReader) throws {
        self.perUploader = try AirlockConfiguration.QuotaLimits(&reader, key: "quotas.perUploader")
        self.perServer = try AirlockConfiguration.QuotaLimits(&reader, key: "quotas.perServer")
    }
}

extension AirlockConfiguration.QuotaLimits {
    /// The limits under `key` (`quotas.perUploader`), or nil when none of them is given.
    fileprivate init?(_ reader: inout ConfigurationReader, key: String) throws {
        let dailyBytes = try reader.optionalInt("\(key).dailyBytes", in: 0...Int(Int64.max / 2))
        let totalBytes = try reader.optionalInt("\(key).totalBytes", in: 0...Int(Int64.max / 2))
        let dailyFiles = try reader.optionalInt("\(key).dailyFiles", in: 0...Int(Int64.max / 2))
        self.init(dailyBytes: dailyBytes.map(Int64.init), totalBytes: totalBytes.map(Int64.init), dailyFiles: dailyFiles.map(Int64.init))
        if self.isUnlimited { return nil }
    }
}

extension ConfigurationReader {
    /// A whole number in `range`, or nil when the key is absent or null (for limits where absent means none).
    mutating func optionalInt(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        // `int` returns its default untouched when the key is absent or null, and Int.min lies outside every range
        // this is called with, so it cannot be a value that was read.
        precondition(!range.contains(Int.min))
        let value = try self.int(key, default: Int.min, in: range)
        return value == Int.min ? nil : value
    }
}
