public import Foundation
public import Logging
import NIOPosix

/// The ledger: every transfer, recipient, verdict, token issuance, download and audit entry, behind the
/// operations the broker, the admin commands and background jobs need. Each operation is one transaction.
///
/// ``SQLiteLedger`` is the embedded implementation. Nothing outside an implementation opens a transaction or
/// writes SQL: callers pass work that must happen inside a transaction (moving bytes into the store, say) as a
/// closure, and decisions that depend on the current row (is it still quarantined?) as a closure that sees it.
public protocol Ledger: Sendable {
    // MARK: Reads

    /// The schema version the ledger is at (the last applied migration).
    func schemaVersion() async throws -> String

    /// A transfer and its recipients (sorted); nil when unknown.
    func transfer(id: String) async throws -> (TransferRecord, [String])?

    /// The transfer an XEP-0363 upload path holds, if any.
    func transfer(inSlot path: String) async throws -> TransferRecord?

    /// The clean verdict these signatures gave the same bytes before, if any.
    func cachedVerdict(sha256: String, signatureVersion: String) async throws -> VerdictCacheRecord?

    /// The verdict cache on the calling thread, when this ledger can answer without waiting on a network (SQLite: a
    /// local file); nil when it cannot (PostgreSQL). The in-memory hand-off asks it inside its scan-worker job, which
    /// saves two thread hops per upload.
    var localVerdictCache: (any LocalVerdictCache)? { get }

    /// Transfers matching `filter`, newest first, with their recipients.
    func transfers(_ filter: TransferFilter) async throws -> [TransferSummary]

    /// Every transfer in one of `states`, oldest first.
    func transfers(inStates states: [TransferState]) async throws -> [TransferRecord]

    /// Transfers the retention policy removes: stored or released ones created before `cleanBefore`, quarantined
    /// ones created before `quarantineBefore`; oldest first.
    func purgeCandidates(cleanBefore: Date, quarantineBefore: Date) async throws -> [TransferRecord]

    /// One transfer with its recipients, audit history and downloads (oldest first); nil when unknown.
    func detail(id: String) async throws -> TransferDetail?

    /// Audit entries, oldest first: with `transferId` only that transfer's, with `limit` only the last ones.
    func auditEntries(transferId: String?, limit: Int?) async throws -> [AuditEntry]

    /// Everything `audit verify` checks, read in one transaction: every entry in order, and the transfers that
    /// have no `transfer.created` entry.
    func auditChain() async throws -> AuditChain

    /// What `subjects` use (nil: every subject the ledger counts, the whole broker among them): bytes and files
    /// stored and not yet deleted or purged, and bytes and files accepted on UTC `day` (``QuotaDay``). A subject
    /// that never uploaded is missing (it has used nothing). Given subjects come in their order; all of them come
    /// highest stored bytes first (on a tie the broker, then servers, then uploaders), then highest bytes that day.
    func quotaUsage(_ subjects: [QuotaSubject]?, day: Int64) async throws -> [QuotaUsage]

    /// Removes the per-day upload counters of UTC days before `day` (no daily quota reads them again), or only
    /// counts them when `dryRun`; returns how many. Stored-bytes counters are not touched.
    func pruneDailyQuotaUsage(before day: Int64, dryRun: Bool) async throws -> Int

    // MARK: Writes (each one transaction)

    /// Records a hand-off: the transfer, its recipients, their download tokens, its XEP-0363 slot
    /// (``BrokerError/slotTaken(_:)`` when another transfer claimed it first), the verdict cache entry and the
    /// `transfer.created` audit entry. `inTransaction` runs inside the transaction before the rows are written.
    /// The entry's ``HandOffEntry/quota`` is checked first, inside the same transaction (serialised with every other
    /// hand-off of the same subjects, on every node): ``BrokerError/quotaExceeded(_:)`` then, and nothing is written.
    func recordHandOff(_ entry: HandOffEntry, inTransaction: @escaping @Sendable () throws -> Void) async throws

    /// Records several hand-offs in one transaction (group commit), each as ``recordHandOff(_:inTransaction:)``
    /// would, in its own savepoint: one that fails (its slot taken, its `inTransaction` throwing) is left out
    /// alone. `beforeCommit` runs once after them, inside the transaction; the commit is durable when this returns.
    ///
    /// - Returns: each member's outcome, in order.
    /// - Throws: when the transaction as a whole fails (then no member was recorded).
    func recordHandOffs(_ group: [GroupMember], beforeCommit: @escaping @Sendable () throws -> Void) async throws -> [Result<Void, any Error>]

    /// Records a download token's issuance, with an audit entry when `audit` is given.
    func recordIssuance(_ issuance: TokenIssuanceRecord, audit: AuditEvent?) async throws

    /// Marks a single-use token used; false when it already was (or was never issued).
    func consumeToken(id tokenId: String, at date: Date) async throws -> Bool

    /// Records one served download.
    func recordDownload(_ download: DownloadRecord) async throws

    /// Appends an audit entry on its own.
    func appendAudit(_ event: AuditEvent) async throws

    /// Changes one transfer as `decide` says, given the transfer as it is inside the transaction: its state set
    /// (and `updatedAt`), then `event` appended (with `previousState` among its details when the state changed). `decide` may throw to refuse; it runs inside the transaction, so
    /// it may also move bytes (a release moves them into the store there). Unless `decide` skipped, the events
    /// `notify` returns for the transfer as it was before are published in the same transaction (their bodies
    /// show the transfer after the change). ``changeTransfer(id:event:_:)`` publishes none.
    ///
    /// - Returns: the transfer as it was before the change; nil when unknown or when `decide` said ``TransferChange/skip``.
    @discardableResult
    func changeTransfer(
        id: String,
        event: AuditEvent,
        notify: @escaping @Sendable (TransferRecord) -> [NotificationEvent],
        _ decide: @escaping @Sendable (TransferRecord) throws -> TransferChange
    ) async throws -> TransferRecord?

    /// Runs `remove` inside a write transaction when no stored or released transfer has content `sha256`, so an
    /// upload of the same bytes cannot interleave.
    func removeUnsharedContent(sha256: String, _ remove: @escaping @Sendable () throws -> Void) async throws

    /// Runs `body` inside a write transaction with what the ledger says must be on disk, so no hand-off commits
    /// meanwhile (start-up's orphan clean-up).
    func withLiveContent<Result: Sendable>(_ body: @escaping @Sendable (LiveContent) throws -> Result) async throws -> Result

    // MARK: Notifications (the outbox; NotificationEvent, README "Notifications")

    /// Which webhooks get which events, and the wake-up of this process's delivery service.
    var notifications: NotificationRouter { get }

    /// Publishes `event` in a transaction of its own: one outbox row per webhook subscribed to it, the body
    /// holding the transfer as it is now for a transfer event (``BrokerError/transferNotFound(_:)`` when unknown).
    func enqueueNotification(_ event: NotificationEvent) async throws

    /// Leases to this node, until `leaseUntil`, up to `limit` undelivered rows of `webhooks` that are due at `now`
    /// and not leased by a node: for each webhook and transfer only the oldest undelivered row, so one transfer's
    /// events go out in order. Several nodes never lease the same row at once.
    func claimNotifications(webhooks: [String], now: Date, leaseUntil: Date, limit: Int) async throws -> OutboxClaim

    /// Records how the attempt on a row this node leased ended, and ends the lease.
    func completeNotification(id: Int64, _ outcome: OutboxOutcome) async throws

    /// Ends every lease this node holds (at start-up and shutdown: deliveries it was making stopped).
    func releaseNotificationLeases() async throws

    /// How many rows of `webhooks` are not delivered yet.
    func pendingNotifications(webhooks: [String]) async throws -> Int

    /// Removes the rows delivered before `date` (undelivered rows stay whatever their age); returns how many.
    @discardableResult
    func pruneNotifications(deliveredBefore date: Date) async throws -> Int

    // MARK: Copying a whole ledger (`airlock ledger copy`)

    /// How many rows each table holds, counted in one transaction.
    func rowCounts() async throws -> LedgerCounts

    /// Every row of every table, read in one transaction (a consistent picture while a server writes).
    func exportSnapshot() async throws -> LedgerSnapshot

    /// Writes `snapshot`'s rows as they are, in one transaction: the same ids, times and node names, the audit
    /// entries verbatim (not chained again, so the hashes and anchors taken on the source still verify). Refused
    /// with ``LedgerCopyError/targetNotEmpty(_:)`` when the ledger already holds any row; if anything fails,
    /// nothing is written. `progress` is called after each table with its name and the rows written.
    func importSnapshot(_ snapshot: LedgerSnapshot, progress: @escaping @Sendable (LedgerTable, Int) -> Void) async throws

    // MARK: Retro-scan and recall (issue 15)

    /// Claims for `node` up to `limit` contents to check with `signatureVersion`: clean content (of `stored`
    /// transfers handed off since `since`) that version has not checked yet (it has no verdict cache entry for
    /// it), newest first, leaving out `handled` (digests the caller's pass has seen already) and what another node
    /// holds a lease on for the same version. Each content
    /// returned is leased to `node` until `leaseUntil` (a node may claim again what it holds already), so nodes
    /// sharing one ledger split a pass instead of each scanning everything. A checked content is no candidate any
    /// more (it has its verdict); its lease is kept until it runs out, so that a claim that read the content as
    /// unleased before the check cannot lease it afresh after it. A recall drops the content's leases. A lease
    /// that ran out (a node that died) can be taken over; one that ran out during a slow check costs a second
    /// scan, never a missed one. Leases that ran out are dropped.
    func claimRetroscanCandidates(
        since: Date,
        signatureVersion: String,
        limit: Int,
        excluding handled: Set<String>,
        node: String,
        now: Date,
        leaseUntil: Date
    ) async throws -> [RetroscanCandidate]

    /// How far `signatureVersion` has checked the clean content handed off since `since`, and how many transfers of
    /// that window were recalled.
    func retroscanProgress(since: Date, signatureVersion: String) async throws -> RetroscanProgress

    /// Records that `verdict.signatureVersion` found `verdict.sha256` clean (a verdict cache entry): a retro-scan's
    /// progress, kept across restarts.
    func recordChecked(_ verdict: VerdictCacheRecord) async throws

    /// Recalls content that is no longer clean, in one transaction: every `stored` transfer with `sha256` becomes
    /// `quarantined` with `verdict`, `signatureVersion` and `recalledAt`; `quarantine` runs for each inside the
    /// transaction (it encrypts the bytes into the quarantine); the content's clean verdict cache entries and its
    /// retro-scan leases go; each
    /// gets a `transfer.recalled` audit entry by `actor` naming the signature and the recipients who had already
    /// downloaded it.
    ///
    /// - Returns: the recalled transfers as they are now, with their recipients and who downloaded them.
    func recall(
        sha256: String,
        verdict: Verdict,
        signatureVersion: String,
        at date: Date,
        actor: String,
        quarantine: @escaping @Sendable (TransferRecord) throws -> Void
    ) async throws -> [RecalledTransfer]

    /// Releases the ledger's connections; nothing may be called after.
    func close() async
}

/// Clean content a retro-scan still has to check.
public struct RetroscanCandidate: Sendable, Equatable {
    /// The content's digest.
    public var sha256: String
    /// Its size.
    public var size: Int64
    /// When the newest transfer of it was handed off.
    public var newest: Date

    /// Creates a candidate.
    public init(sha256: String, size: Int64, newest: Date) {
        self.sha256 = sha256
        self.size = size
        self.newest = newest
    }
}

/// How far a retro-scan has come (``Ledger/retroscanProgress(since:signatureVersion:)``).
public struct RetroscanProgress: Sendable, Equatable, Codable {
    /// Distinct clean contents of the window the version has checked.
    public var checked: Int
    /// Distinct clean contents of the window it has not checked yet.
    public var pending: Int
    /// Transfers of the window recalled (by any version).
    public var recalled: Int

    /// Creates progress figures.
    public init(checked: Int, pending: Int, recalled: Int) {
        self.checked = checked
        self.pending = pending
        self.recalled = recalled
    }
}

/// A transfer a recall quarantined.
public struct RecalledTransfer: Sendable {
    /// The transfer as it is now (`quarantined`, with `recalledAt`).
    public var transfer: TransferRecord
    /// Its recipients.
    public var recipients: [String]
    /// The recipients who had already downloaded it (sorted); a download without a known recipient (an XEP-0363 GET)
    /// counts as `(XEP-0363 download)`.
    public var downloadedBy: [String]
}

/// A verdict cache read on the calling thread (``Ledger/localVerdictCache``).
public protocol LocalVerdictCache: Sendable {
    /// What ``Ledger/cachedVerdict(sha256:signatureVersion:)`` answers. Blocks on the ledger's file: call it from a
    /// thread of its own (a scan worker), never from the cooperative pool.
    func cachedVerdictBlocking(sha256: String, signatureVersion: String) throws -> VerdictCacheRecord?
}

extension Ledger {
    /// None unless the ledger gives one.
    public var localVerdictCache: (any LocalVerdictCache)? { nil }

    /// Changes one transfer as ``changeTransfer(id:event:notify:_:)`` does, publishing no event.
    @discardableResult
    public func changeTransfer(
        id: String,
        event: AuditEvent,
        _ decide: @escaping @Sendable (TransferRecord) throws -> TransferChange
    ) async throws -> TransferRecord? {
        try await self.changeTransfer(id: id, event: event, notify: { _ in [] }, decide)
    }
}

/// Opens the ledger a configuration names.
public enum LedgerConnector {
    /// The ledger of `configuration`: SQLite at `sqlitePath` (created if absent; opened on a thread of NIO's shared
    /// pool, since GRDB opens and migrates on the calling thread), or the PostgreSQL server of `ledger.postgresql`
    /// (migrated if behind).
    public static func open(_ configuration: AirlockConfiguration, sqlitePath: String, logger: Logger) async throws -> any Ledger {
        switch configuration.ledger.backend {
        case .sqlite:
            let node = configuration.node.id
            let router = NotificationRouter(configuration.notifications.webhooks)
            return try await NIOThreadPool.singleton.runIfActive { try SQLiteLedger(path: sqlitePath, node: node, notifications: router) }
        case .postgresql(let settings):
            let router = NotificationRouter(configuration.notifications.webhooks)
            return try await PostgresLedger.connect(settings, node: configuration.node.id, notifications: router, logger: logger)
        }
    }
}

/// One hand-off of a group commit: what it writes, and what must happen inside the transaction first.
public struct GroupMember: Sendable {
    /// The rows.
    public var entry: HandOffEntry
    /// Runs inside the transaction before the rows are written (moves clean bytes into the store).
    public var inTransaction: @Sendable () throws -> Void

    /// Creates a member.
    public init(entry: HandOffEntry, inTransaction: @escaping @Sendable () throws -> Void) {
        self.entry = entry
        self.inTransaction = inTransaction
    }
}

/// Everything one hand-off writes to the ledger, decided before the transaction starts.
public struct HandOffEntry: Sendable {
    /// The transfer row.
    public var transfer: TransferRecord
    /// Its recipients, sorted, without duplicates.
    public var recipients: [String]
    /// The download tokens minted for them (clean transfers only).
    public var issuances: [TokenIssuanceRecord]
    /// The verdict (with its signature or reason, for the audit entry).
    public var verdict: Verdict
    /// Whether to remember this verdict for the same bytes and signatures: a clean one, or a scanner failure.
    public var cacheVerdict: Bool
    /// The XEP-0363 upload path to claim, if any.
    public var slot: String?
    /// Events to publish in the same transaction (`transfer.quarantined`); their bodies show this transfer.
    public var notifications: [NotificationEvent] = []
    /// The quotas the transfer must fit in, checked inside the transaction; nil when none is configured.
    public var quota: QuotaCheck? = nil

    /// The verdict cache row this hand-off writes, if any.
    var cachedVerdict: VerdictCacheRecord? {
        // A clean verdict always has a detected type (the policy needs it again for the next declared type).
        guard self.cacheVerdict, !self.verdict.isClean || self.transfer.detectedType != nil else { return nil }
        return VerdictCacheRecord(
            sha256: self.transfer.sha256,
            signatureVersion: self.transfer.signatureVersion,
            detectedType: self.transfer.detectedType ?? "",
            typeDescription: self.transfer.typeDescription ?? "",
            createdAt: self.transfer.createdAt,
            scannerFailure: self.verdict.isClean ? nil : self.verdict.reason
        )
    }

    /// The `transfer.created` audit entry's details.
    var auditDetails: [String: String] {
        var details = [
            "sha256": self.transfer.sha256, "size": String(self.transfer.size), "verdict": self.verdict.kind.rawValue,
            "state": self.transfer.state.rawValue,
        ]
        details["signature"] = self.verdict.signature
        details["reason"] = self.verdict.reason
        details["slot"] = self.slot
        return details
    }
}

extension [String: String] {
    /// Audit details with the appending node's `node.id` (when known), so every entry says where it was written.
    func stamped(node: String?) -> [String: String] {
        guard let node, self["node"] == nil else { return self }
        var details = self
        details["node"] = node
        return details
    }
}

/// An audit entry to append: the ledger chains it to the last one.
public struct AuditEvent: Sendable {
    /// When.
    public var at: Date
    /// Who: `admin:<user>`, `server:<name>`.
    public var actor: String
    /// What: `transfer.deleted`, `quarantine.released`, …
    public var action: String
    /// The transfer concerned, if any.
    public var transferId: String?
    /// Details, written as a JSON object with sorted keys.
    public var details: [String: String]

    /// Creates an event.
    public init(at: Date, actor: String, action: String, transferId: String?, details: [String: String] = [:]) {
        self.at = at
        self.actor = actor
        self.action = action
        self.transferId = transferId
        self.details = details
    }
}

/// What ``Ledger/changeTransfer(id:event:_:)`` does with a transfer.
public enum TransferChange: Sendable {
    /// Set this state, then append the event.
    case setState(TransferState)
    /// Keep the state; append the event.
    case keepState
    /// Change nothing, append nothing.
    case skip
}

/// What must be on disk according to the ledger.
public struct LiveContent: Sendable {
    /// The SHA-256 of every stored or released transfer's content.
    public var cleanHashes: Set<String>
    /// The id of every quarantined transfer.
    public var quarantinedIds: Set<String>
}

/// What `audit verify` reads.
public struct AuditChain: Sendable {
    /// Every entry, in order.
    public var entries: [AuditEntry]
    /// Transfers without a `transfer.created` entry, oldest first.
    public var transfersWithoutCreation: [String]
}

/// Which transfers to list.
public struct TransferFilter: Sendable {
    /// Only this sender.
    public var sender: String?
    /// Only transfers with this recipient.
    public var recipient: String?
    /// Only transfers created at or after this time.
    public var since: Date?
    /// Only this verdict.
    public var verdict: Verdict.Kind?
    /// Only these states.
    public var states: [TransferState]?
    /// At most this many, newest first.
    public var limit: Int

    /// Creates a filter.
    public init(
        sender: String? = nil,
        recipient: String? = nil,
        since: Date? = nil,
        verdict: Verdict.Kind? = nil,
        states: [TransferState]? = nil,
        limit: Int = 100
    ) {
        self.sender = sender
        self.recipient = recipient
        self.since = since
        self.verdict = verdict
        self.states = states
        self.limit = limit
    }
}

/// A transfer with its recipients.
public struct TransferSummary: Sendable, Equatable {
    /// The row.
    public var record: TransferRecord
    /// Its recipients.
    public var recipients: [String]
}

/// Everything known about one transfer.
public struct TransferDetail: Sendable {
    /// The transfer and recipients.
    public var summary: TransferSummary
    /// Its audit history, oldest first.
    public var audit: [AuditEntry]
    /// Its downloads, oldest first.
    public var downloads: [DownloadRecord]
}

/// A download URL for one recipient.
public struct DownloadGrant: Sendable, Equatable {
    /// The recipient.
    public var recipient: String
    /// The URL to put in the chat message.
    public var url: String
    /// When it stops working.
    public var expiresAt: Date
}
