import Crypto
public import Foundation
import LibMagic
import Synchronization
public import Logging
public import NIOCore
public import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// The broker's domain logic, independent of HTTP: receive, inspect, store and record transfers; mint and
/// check download tokens; delete.
public final class Broker: Sendable {
    /// The configuration in force now (a reload replaces it).
    public var configuration: AirlockConfiguration { self.transfers.live.current.configuration }
    /// The configuration in force now and what is derived from it.
    public var live: LiveConfiguration { self.transfers.live }
    /// The inspection pipeline.
    public let inspector: Inspector
    /// The bytes on disk.
    public let store: FileStore
    /// The ledger.
    public var ledger: any Ledger { self.transfers.ledger }
    /// Download tokens.
    public var tokens: DownloadTokens { self.transfers.tokens }
    /// Queries, token issuance and deletion, shared with the admin commands.
    public let transfers: TransferService
    /// Threads for blocking file I/O.
    public let threadPool: NIOThreadPool
    /// Group commit (`ledger.groupCommitMicroseconds`), nil when off.
    let committer: GroupCommitter?
    /// The clock (injectable for tests).
    public let now: @Sendable () -> Date
    /// Called after every reload.
    let reloadObservers = Mutex<[@Sendable (ReloadReport) -> Void]>([])
    /// Counts this process's reloads (`reload-status.json`).
    let reloadSequence = Atomic<Int>(0)
    let logger: Logger

    private init(
        inspector: Inspector,
        store: FileStore,
        transfers: TransferService,
        threadPool: NIOThreadPool,
        committer: GroupCommitter?,
        now: @escaping @Sendable () -> Date,
        logger: Logger
    ) {
        self.inspector = inspector
        self.store = store
        self.transfers = transfers
        self.threadPool = threadPool
        self.committer = committer
        self.now = now
        self.logger = logger
    }

    /// Prepares the store (emptying staging), opens and migrates the ledger, loads signatures and token keys.
    public static func start(
        configuration: AirlockConfiguration,
        logger: Logger,
        now: @escaping @Sendable () -> Date = { Date() }
    ) async throws -> Broker {
        let threadPool = NIOThreadPool(numberOfThreads: max(2, ProcessInfo.processInfo.activeProcessorCount))
        threadPool.start()
        do {
            let store = FileStore(configuration.storage, node: configuration.node.id)
            let removed = try await threadPool.runIfActive { try store.prepare() }
            let ledger = try await LedgerConnector.open(configuration, sqlitePath: store.databasePath, logger: logger)
            if removed > 0 {
                logger.notice("removed stale staging files left by an interrupted run", metadata: ["count": "\(removed)"])
            }
            // libclamav's per-scan directories go to var/scanning: private (0700), on the store's filesystem (not
            // /tmp, where creating one per scan cost more than scanning a small file), and emptied at start-up, so
            // nothing it extracted outlives a crash.
            let inspector = try await Inspector.start(configuration: configuration, temporaryDirectory: store.scanningDirectory, logger: logger)
            Self.auditScannerEvents(inspector, ledger: ledger, node: configuration.node.id, now: now, logger: logger)
            let tokens = DownloadTokens(configuration.tokens)
            let transfers = TransferService(configuration: configuration, ledger: ledger, store: store, tokens: tokens, now: now)
            let orphans = try await transfers.removeOrphanedBytes()
            if !orphans.isEmpty {
                logger.notice("removed bytes that no transfer accounts for (left by an interrupted run)", metadata: ["count": "\(orphans.count)"])
            }
            var committer: GroupCommitter?
            if configuration.ledger.groupCommitMicroseconds > 0 {
                committer = GroupCommitter(
                    ledger: ledger,
                    store: store,
                    window: .microseconds(configuration.ledger.groupCommitMicroseconds)
                )
            }
            return Broker(
                inspector: inspector,
                store: store,
                transfers: transfers,
                threadPool: threadPool,
                committer: committer,
                now: now,
                logger: logger
            )
        } catch {
            try? await threadPool.shutdownGracefully()
            throw error
        }
    }

    /// Every scanner crash and overrun lands in the audit log (`scanner.crashed`, `scanner.timedOut`).
    private static func auditScannerEvents(_ inspector: Inspector, ledger: any Ledger, node: String?, now: @escaping @Sendable () -> Date, logger: Logger) {
        inspector.observeScanner { event in
            let action: String
            var details: [String: String] = [:]
            switch event {
            case .crashed(let pid, let cause, let inFlight):
                action = "scanner.crashed"
                details = ["pid": "\(pid)", "cause": "\(cause)", "scansInFlight": "\(inFlight)"]
            case .timedOut(let pid, let inFlight):
                action = "scanner.timedOut"
                details = ["pid": "\(pid)", "scansInFlight": "\(inFlight)"]
            case .started:
                return
            }
            if let node { details["node"] = node }
            let event = AuditEvent(at: now(), actor: "airlock:scanner", action: action, transferId: nil, details: details)
            Task {
                do {
                    try await ledger.appendAudit(event)
                } catch {
                    logger.error("cannot audit a scanner event", metadata: ["action": "\(action)", "error": "\(error)"])
                }
            }
        }
    }

    /// Stops the worker threads and closes the ledger.
    public func shutdown() async throws {
        try await self.inspector.shutdown()
        try await self.threadPool.shutdownGracefully()
        await self.ledger.close()
    }
}
