/// The tables of a ledger, in the order a copy writes them (rows before the rows that refer to them).
public enum LedgerTable: String, Sendable, CaseIterable, Codable {
    case transfers
    case recipients
    case tokenIssuances
    case downloads
    case uploadSlots
    case verdictCache
    case auditLog
    case notificationOutbox

    /// The name progress lines print: `token issuances`, `audit entries`.
    public var label: String {
        switch self {
        case .transfers: "transfers"
        case .recipients: "recipients"
        case .tokenIssuances: "token issuances"
        case .downloads: "downloads"
        case .uploadSlots: "upload slots"
        case .verdictCache: "cached verdicts"
        case .auditLog: "audit entries"
        case .notificationOutbox: "webhook deliveries"
        }
    }
}

/// How many rows each table of a ledger holds.
public struct LedgerCounts: Sendable, Equatable, Codable {
    /// Transfers.
    public var transfers = 0
    /// Transfer recipients.
    public var recipients = 0
    /// Download token issuances.
    public var tokenIssuances = 0
    /// Downloads served.
    public var downloads = 0
    /// XEP-0363 upload slots.
    public var uploadSlots = 0
    /// Cached clean verdicts.
    public var verdictCache = 0
    /// Audit log entries.
    public var auditLog = 0
    /// Notification outbox rows (one per event and webhook).
    public var notificationOutbox = 0

    /// Creates counts (all zero by default).
    public init(
        transfers: Int = 0,
        recipients: Int = 0,
        tokenIssuances: Int = 0,
        downloads: Int = 0,
        uploadSlots: Int = 0,
        verdictCache: Int = 0,
        auditLog: Int = 0,
        notificationOutbox: Int = 0
    ) {
        self.transfers = transfers
        self.recipients = recipients
        self.tokenIssuances = tokenIssuances
        self.downloads = downloads
        self.uploadSlots = uploadSlots
        self.verdictCache = verdictCache
        self.auditLog = auditLog
        self.notificationOutbox = notificationOutbox
    }

    /// The count of `table`.
    public subscript(table: LedgerTable) -> Int {
        get {
            switch table {
            case .transfers: self.transfers
            case .recipients: self.recipients
            case .tokenIssuances: self.tokenIssuances
            case .downloads: self.downloads
            case .uploadSlots: self.uploadSlots
            case .verdictCache: self.verdictCache
            case .auditLog: self.auditLog
            case .notificationOutbox: self.notificationOutbox
            }
        }
        set {
            switch table {
            case .transfers: self.transfers = newValue
            case .recipients: self.recipients = newValue
            case .tokenIssuances: self.tokenIssuances = newValue
            case .downloads: self.downloads = newValue
            case .uploadSlots: self.uploadSlots = newValue
            case .verdictCache: self.verdictCache = newValue
            case .auditLog: self.auditLog = newValue
            case .notificationOutbox: self.notificationOutbox = newValue
            }
        }
    }

    /// Whether every table is empty.
    public var isEmpty: Bool { LedgerTable.allCases.allSatisfy { self[$0] == 0 } }
}

/// Every row of a ledger, as ``Ledger/exportSnapshot()`` read it and ``Ledger/importSnapshot(_:progress:)`` writes it.
public struct LedgerSnapshot: Sendable, Equatable {
    /// Transfers, oldest first.
    public var transfers: [TransferRecord] = []
    /// Recipients.
    public var recipients: [RecipientRecord] = []
    /// Download token issuances, with when each was used.
    public var tokenIssuances: [TokenIssuanceRecord] = []
    /// Downloads, by id.
    public var downloads: [DownloadRecord] = []
    /// XEP-0363 upload slots.
    public var uploadSlots: [UploadSlotRecord] = []
    /// Cached clean verdicts.
    public var verdictCache: [VerdictCacheRecord] = []
    /// The audit log, by id, each entry as it was written (its hash and its predecessor's).
    public var auditLog: [AuditEntry] = []
    /// The notification outbox, by id, delivered and pending rows alike.
    public var notificationOutbox: [OutboxRecord] = []

    /// Creates an empty snapshot.
    public init() {}

    /// How many rows of each table it holds.
    public var counts: LedgerCounts {
        LedgerCounts(
            transfers: self.transfers.count,
            recipients: self.recipients.count,
            tokenIssuances: self.tokenIssuances.count,
            downloads: self.downloads.count,
            uploadSlots: self.uploadSlots.count,
            verdictCache: self.verdictCache.count,
            auditLog: self.auditLog.count,
            notificationOutbox: self.notificationOutbox.count
        )
    }
}

extension Ledger {
    /// Whether the ledger holds no row at all (a copy's target must not).
    public func isEmpty() async throws -> Bool {
        try await self.rowCounts().isEmpty
    }
}

/// Why a ledger refused a copy.
public enum LedgerCopyError: Error, Equatable, CustomStringConvertible {
    /// The target already holds rows.
    case targetNotEmpty(LedgerCounts)

    public var description: String {
        switch self {
        case .targetNotEmpty(let counts):
            "the target ledger is not empty (\(counts.transfers) transfers, \(counts.auditLog) audit entries, "
                + "\(counts.verdictCache) cached verdicts): copy only into a new, empty database (CREATE DATABASE), "
                + "and start no `airlock serve` on it before the copy"
        }
    }
}
