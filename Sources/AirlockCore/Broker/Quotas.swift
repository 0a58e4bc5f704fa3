public import Foundation

/// Whose usage a quota counts.
public enum QuotaScope: String, Sendable, Codable, CaseIterable, Comparable {
    /// One uploader (`quotas.perUploader`).
    case uploader
    /// One IM server (`quotas.perServer`).
    case server
    /// Everything the broker holds (`limits.maxStoredBytes`).
    case global

    private var rank: Int {
        switch self {
        case .uploader: 0
        case .server: 1
        case .global: 2
        }
    }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rank < rhs.rank }
}

/// One uploader, one server, or the whole broker.
public struct QuotaSubject: Sendable, Hashable, Comparable, Codable {
    /// What kind of subject.
    public var scope: QuotaScope
    /// The uploader's or server's name; empty for ``QuotaScope/global``.
    public var name: String

    /// Creates a subject.
    public init(_ scope: QuotaScope, _ name: String) {
        self.scope = scope
        self.name = scope == .global ? "" : name
    }

    /// The whole broker.
    public static let global = QuotaSubject(.global, "")

    /// The text the PostgreSQL ledger hashes into this subject's advisory lock key.
    var lockName: String { "\(self.scope.rawValue):\(self.name)" }

    public static func < (lhs: Self, rhs: Self) -> Bool {
        (lhs.scope, lhs.name) < (rhs.scope, rhs.name)
    }
}

/// What one subject uses, as the ledger counts it (kept up to date in the transactions that write transfers).
public struct QuotaUsage: Sendable, Equatable, Codable {
    /// Whose.
    public var subject: QuotaSubject
    /// Bytes of its transfers not yet deleted or purged (stored, released or quarantined).
    public var storedBytes: Int64
    /// How many such transfers.
    public var storedFiles: Int64
    /// Bytes accepted on the UTC day asked for, whatever became of them.
    public var dayBytes: Int64
    /// Uploads accepted on that day.
    public var dayFiles: Int64

    /// Creates a usage record.
    public init(subject: QuotaSubject, storedBytes: Int64 = 0, storedFiles: Int64 = 0, dayBytes: Int64 = 0, dayFiles: Int64 = 0) {
        self.subject = subject
        self.storedBytes = storedBytes
        self.storedFiles = storedFiles
        self.dayBytes = dayBytes
        self.dayFiles = dayFiles
    }
}

/// The UTC day a quota's daily counts belong to: days since 1970-01-01, from the time rounded to the millisecond as
/// both ledgers store it.
public enum QuotaDay {
    static let millisecondsPerDay: Int64 = 86_400_000

    /// The day `date` falls on.
    public static func of(_ date: Date) -> Int64 {
        let milliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded())
        return milliseconds >= 0 ? milliseconds / Self.millisecondsPerDay : (milliseconds + 1) / Self.millisecondsPerDay - 1
    }

    /// Whole seconds from `date` until the next UTC day begins (at least 1): a daily quota's `Retry-After`.
    public static func secondsUntilNextDay(after date: Date) -> Int {
        let milliseconds = Int64((date.timeIntervalSince1970 * 1000).rounded())
        let next = (Self.of(date) + 1) * Self.millisecondsPerDay
        return max(1, Int((next - milliseconds + 999) / 1000))
    }
}

/// The quotas one hand-off must fit in: its uploader's and server's limits and the broker's, from the configuration.
public struct QuotaCheck: Sendable, Equatable {
    /// The uploader (the hand-off's sender).
    public var uploader: String
    /// The IM server.
    public var server: String
    /// `quotas.perUploader`.
    public var perUploader: AirlockConfiguration.QuotaLimits?
    /// `quotas.perServer`.
    public var perServer: AirlockConfiguration.QuotaLimits?
    /// `limits.maxStoredBytes`.
    public var maxStoredBytes: Int64?

    /// Creates a check.
    public init(
        uploader: String,
        server: String,
        perUploader: AirlockConfiguration.QuotaLimits?,
        perServer: AirlockConfiguration.QuotaLimits?,
        maxStoredBytes: Int64?
    ) {
        self.uploader = uploader
        self.server = server
        self.perUploader = perUploader
        self.perServer = perServer
        self.maxStoredBytes = maxStoredBytes
    }

    /// The subjects whose usage the check reads (and, on PostgreSQL, locks), sorted.
    public var subjects: [QuotaSubject] {
        var subjects: [QuotaSubject] = []
        if self.perUploader != nil { subjects.append(QuotaSubject(.uploader, self.uploader)) }
        if self.perServer != nil { subjects.append(QuotaSubject(.server, self.server)) }
        if self.maxStoredBytes != nil { subjects.append(.global) }
        return subjects.sorted()
    }

    /// The first quota an upload of `size` bytes at `date` would exceed, given the subjects' `usage` on that day
    /// (a subject missing from it has used nothing); nil when it fits in all.
    ///
    /// The quotas on what is stored come first (507): waiting for the next day does not help while one of them is
    /// exceeded. An upload that brings a count exactly to its limit fits.
    public func refusal(adding size: Int64, at date: Date, usage: [QuotaUsage]) -> QuotaExceeded? {
        func used(_ subject: QuotaSubject) -> QuotaUsage {
            usage.first { $0.subject == subject } ?? QuotaUsage(subject: subject)
        }
        let uploader = used(QuotaSubject(.uploader, self.uploader))
        let server = used(QuotaSubject(.server, self.server))
        let stored: [(String, Int64?, Int64, String)] = [
            ("quotas.perUploader.totalBytes", self.perUploader?.totalBytes, uploader.storedBytes, self.uploader),
            ("quotas.perServer.totalBytes", self.perServer?.totalBytes, server.storedBytes, self.server),
            ("limits.maxStoredBytes", self.maxStoredBytes, used(.global).storedBytes, ""),
        ]
        for (quota, limit, current, subject) in stored {
            if let limit, current + size > limit {
                return QuotaExceeded(quota: quota, subject: subject, limit: limit, requested: size, retryAfterSeconds: nil)
            }
        }
        let retryAfter = QuotaDay.secondsUntilNextDay(after: date)
        let daily: [(String, Int64?, Int64, Int64, String)] = [
            ("quotas.perUploader.dailyBytes", self.perUploader?.dailyBytes, uploader.dayBytes, size, self.uploader),
            ("quotas.perUploader.dailyFiles", self.perUploader?.dailyFiles, uploader.dayFiles, 1, self.uploader),
            ("quotas.perServer.dailyBytes", self.perServer?.dailyBytes, server.dayBytes, size, self.server),
            ("quotas.perServer.dailyFiles", self.perServer?.dailyFiles, server.dayFiles, 1, self.server),
        ]
        for (quota, limit, current, adding, subject) in daily {
            if let limit, current + adding > limit {
                return QuotaExceeded(quota: quota, subject: subject, limit: limit, requested: adding, retryAfterSeconds: retryAfter)
            }
        }
        return nil
    }
}

/// An upload refused because it would exceed a quota: 429 with `Retry-After` for a daily one, 507 otherwise.
public struct QuotaExceeded: Error, Sendable, Equatable, CustomStringConvertible {
    /// The configuration key of the quota (`quotas.perUploader.dailyBytes`, `limits.maxStoredBytes`).
    public var quota: String
    /// The uploader or server it counts for; empty for `limits.maxStoredBytes`.
    public var subject: String
    /// The quota's limit (bytes, or files for `dailyFiles`).
    public var limit: Int64
    /// What the upload would add (its bytes, or one file).
    public var requested: Int64
    /// For a daily quota, the seconds until the UTC day rolls over; nil for the others.
    public var retryAfterSeconds: Int?

    /// Whether the quota is a daily one (it passes with the day).
    public var isDaily: Bool { self.retryAfterSeconds != nil }

    public var description: String {
        let unit = self.quota.hasSuffix("Files") ? "files" : "bytes"
        let what = unit == "files" ? "another upload" : "this upload of \(self.requested) bytes"
        if let retryAfter = self.retryAfterSeconds {
            return """
                \(what) would exceed \(self.quota) (\(self.limit) \(unit) per UTC day) for \(self.subject): retry after the UTC \
                day rolls over, in \(retryAfter) seconds (Retry-After), or ask the operator to raise the quota
                """
        }
        if self.quota == "limits.maxStoredBytes" {
            return """
                \(what) would exceed limits.maxStoredBytes (\(self.limit) bytes stored in all): the operator must free space \
                (airlock purge, airlock quarantine delete) or raise the limit
                """
        }
        return """
            \(what) would exceed \(self.quota) (\(self.limit) bytes stored at once) for \(self.subject): retract earlier \
            transfers or wait until retention purges them, or ask the operator to raise the quota
            """
    }
}

extension Broker {
    /// The quotas `handOff` must fit in; nil when none is configured.
    func quotaCheck(for handOff: HandOff) -> QuotaCheck? {
        self.configuration.quotaCheck(uploader: handOff.sender, server: handOff.server)
    }

    /// Refuses an upload before any byte of its body is read when it cannot fit in its quotas: its announced
    /// `length` (0 when unknown, which still refuses an uploader already at a limit). This early check saves
    /// receiving and inspecting a body in vain; the check that holds under concurrency is the one inside the
    /// ledger transaction that records the hand-off.
    ///
    /// - Throws: ``BrokerError/quotaExceeded(_:)``.
    public func checkQuota(_ handOff: HandOff, length: Int?) async throws {
        guard let check = self.quotaCheck(for: handOff) else { return }
        let now = self.now()
        let usage = try await self.ledger.quotaUsage(check.subjects, day: QuotaDay.of(now))
        if let refusal = check.refusal(adding: Int64(length ?? 0), at: now, usage: usage) {
            throw BrokerError.quotaExceeded(refusal)
        }
    }
}
