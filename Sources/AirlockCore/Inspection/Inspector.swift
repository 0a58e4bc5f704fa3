import Crypto
public import Foundation
import LibMagic
public import Logging
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Where libclamav and libmagic run: in the confined scanner process(es), or (isolation off) in this one. Every
/// method blocks: call them on threads of their own.
enum ParserHost: Sendable {
    case inProcess(Parsers)
    case isolated([ScannerSupervisor])

    /// The least busy scanner process; nil without isolation.
    var supervisor: ScannerSupervisor? {
        guard case .isolated(let supervisors) = self else { return nil }
        return Self.leastBusy(supervisors)
    }

    private static func leastBusy(_ supervisors: [ScannerSupervisor]) -> ScannerSupervisor {
        supervisors.count == 1 ? supervisors[0] : supervisors.min { $0.load < $1.load }!
    }

    func inspect(bytes: UnsafeRawBufferPointer, declaredType: String?, describe: Bool) -> ParserReport {
        switch self {
        case .inProcess(let parsers): parsers.inspect(bytes: bytes, declaredType: declaredType, describe: describe).stamped(parsers)
        case .isolated(let supervisors): Self.leastBusy(supervisors).inspect(bytes: bytes, declaredType: declaredType, describe: describe)
        }
    }

    func inspect(descriptor: Int32, name: String, declaredType: String?, describe: Bool) -> ParserReport {
        switch self {
        case .inProcess(let parsers):
            parsers.inspect(descriptor: descriptor, name: name, declaredType: declaredType, describe: describe).stamped(parsers)
        case .isolated(let supervisors):
            Self.leastBusy(supervisors).inspect(descriptor: descriptor, name: name, declaredType: declaredType, describe: describe)
        }
    }

    /// Inspects an upload while it is received (the staging file at `descriptor` grows as `progress` says); nil
    /// when the inspection could not finish (the upload ended short, or `stop`).
    func inspectWhileReceiving(
        descriptor: Int32,
        length: Int,
        name: String,
        progress: StagingProgress,
        stop: StopSignal,
        declaredType: String?
    ) -> ParserReport? {
        guard case .inProcess(let parsers) = self else {
            return self.supervisor!.inspectWhileReceiving(
                descriptor: descriptor,
                length: length,
                name: name,
                progress: progress,
                stop: stop,
                declaredType: declaredType
            )
        }
        // Blocks until the requested bytes are on disk; -1 (the scan fails, the result is discarded) when the
        // upload ends short or the inspection is no longer wanted.
        return parsers.inspect(length: length, name: name, declaredType: declaredType) { buffer, offset in
            guard progress.wait(forLength: Int64(offset + buffer.count), stop: { stop.isStopped }) else {
                // libclamav logs the errno with the failed read: "pread error: Operation canceled".
                errno = ECANCELED
                return -1
            }
            let count = Parsers.readFully(descriptor, buffer, offset: offset)
            return count == buffer.count ? count : -1
        }?.stamped(parsers)
    }
}

extension ParserReport {
    /// The report with the version of the signatures that produced it.
    fileprivate func stamped(_ parsers: Parsers) -> ParserReport {
        var report = self
        report.signatureVersion = parsers.signatures.version
        return report
    }
}

/// The inspection pipeline: size limit, SHA-256, then the parsers (detected type, scan, policy). Fails closed: any
/// error, limit hit, scanner crash or overrun is `unscannable`, never `clean`.
///
/// With `scanner.isolation.enabled` (the default) the parsers run in supervised, confined scanner processes
/// (``ScannerService``) that get each file as a descriptor; this process only hashes. Blocking work runs on
/// dedicated `NIOThreadPool`s, never on Swift's cooperative pool.
///
/// The parsers are replaced whole by a reload (``reload(_:)``): each inspection leases the generation that is
/// current when it starts and finishes on it.
public final class Inspector: Sendable {
    let slot: GenerationSlot
    private let threadPool: NIOThreadPool
    /// Threads for scans that read an upload while it is received; they may wait on the network, so they are
    /// kept apart from `threadPool` and their number bounds how many such scans run at once.
    private let receivingPool: NIOThreadPool
    private let receivingSlots: Int
    private let receivingInFlight = Atomic<Int>(0)
    /// Uploads recently scanned clean, by size and the digest of their start: a new upload that matches is
    /// probably a repeat that the verdict cache will answer, so no scan is started while it is received.
    let recentlyClean = Mutex(RecentHeads(capacity: 4096))
    /// Uploads on which the scanner recently died or overran: a repeat is inspected only after its last byte, when
    /// its digest is known and the remembered verdict answers, so it cannot crash the scanner while received.
    private let recentlyFailed = Mutex(RecentHeads(capacity: 1024))
    /// The scanners' scratch directory when it was made for this inspector alone (removed at shutdown).
    private let ownScratch: String?
    /// Where each generation's scanner processes get their scratch directories.
    let scratchBase: String?
    /// How long an inspection waits for parsers while a blocking reload compiles (`scanner.scanTimeoutSeconds` as
    /// the last reload set it).
    var waitForParsers: TimeInterval {
        TimeInterval(self.reloadState.withLock { $0.configuration.scanner.scanTimeoutSeconds })
    }
    /// One thread for reloads: they are serialised, and a compile never takes a scan worker.
    let reloadPool: NIOThreadPool
    /// Retired generations being drained and shut down.
    let retiring = DispatchGroup()
    let reloadState: Mutex<ReloadState>
    let observers = Mutex<[@Sendable (ScannerEvent) -> Void]>([])
    /// Called once a replaced generation has finished its last inspection.
    let retirementObservers = Mutex<[@Sendable () -> Void]>([])
    let logger: Logger

    private init(
        first: ParserGeneration,
        threadPool: NIOThreadPool,
        receivingPool: NIOThreadPool,
        reloadPool: NIOThreadPool,
        receivingSlots: Int,
        ownScratch: String?,
        scratchBase: String?,
        configuration: AirlockConfiguration,
        fingerprint: SignatureFingerprint,
        logger: Logger
    ) {
        self.slot = GenerationSlot(first)
        self.ownScratch = ownScratch
        self.scratchBase = scratchBase
        self.threadPool = threadPool
        self.receivingPool = receivingPool
        self.reloadPool = reloadPool
        self.receivingSlots = receivingSlots
        self.reloadState = Mutex(ReloadState(configuration: configuration, fingerprint: fingerprint))
        self.logger = logger
    }

    /// The signatures that serve now (during a blocking reload, the ones being replaced).
    public var signatures: SignatureInfo { self.slot.newest.signatures }
    /// The type policy that judges now.
    public var policy: TypePolicy { self.slot.newest.policy }
    /// When the signatures that serve now finished compiling.
    public var signaturesLoadedAt: Date { self.slot.newest.loadedAt }

    /// Starts the worker threads and the scanner processes (or, with isolation off, loads the signatures here);
    /// call ``shutdown()`` when done.
    ///
    /// - Parameter temporaryDirectory: where libclamav extracts what it scans inside files: each scanner process
    ///   gets a private directory beneath it. Nil: a new private directory under `$TMPDIR` (the CLI).
    /// - Throws: ``SignatureDatabaseError``, `MagicError` or ``ScannerStartError`` when the parsers cannot be set up.
    public static func start(configuration: AirlockConfiguration, temporaryDirectory: String? = nil, logger: Logger) async throws -> Inspector {
        let scanner = configuration.scanner
        let isolated = scanner.isolation.enabled
        // With isolation, a broker thread waits while a scanner thread works: twice as many keep the scanners busy
        // while the broker hashes and stores.
        let threadPool = NIOThreadPool(numberOfThreads: scanner.effectiveWorkers * (isolated ? 2 : 1))
        threadPool.start()
        let receivingPool = NIOThreadPool(numberOfThreads: scanner.effectiveWorkers)
        receivingPool.start()
        let reloadPool = NIOThreadPool(numberOfThreads: 1)
        reloadPool.start()
        var ownScratch: String?
        if isolated, temporaryDirectory == nil {
            ownScratch = (NSTemporaryDirectory() as NSString).appendingPathComponent(
                "airlock-scanner-\(getpid())-\(UUID.random().uuidString.prefix(8))"
            )
        }
        do {
            let scratchBase = temporaryDirectory ?? ownScratch
            let (first, fingerprint) = try await reloadPool.runIfActive {
                let fingerprint = SignatureFingerprint(directories: scanner.signatureDirectories)
                let generation = try Self.buildGeneration(
                    number: 1,
                    configuration: configuration,
                    scratchBase: scratchBase,
                    observers: [],
                    logger: logger
                )
                return (generation, fingerprint)
            }
            let signatures = first.signatures
            if signatures.onlyTestSignatures {
                let banner = String(repeating: "*", count: 78)
                logger.warning(
                    """
                    \n\(banner)
                    ONLY AIRLOCK'S BUNDLED TEST SIGNATURES ARE LOADED (\(signatures.signatureCount) signatures).
                    They detect test files only: this gives NO protection against real malware.
                    Install clamav-freshclam and keep /var/lib/clamav in scanner.signatureDirectories.
                    \(banner)
                    """
                )
            }
            return Inspector(
                first: first,
                threadPool: threadPool,
                receivingPool: receivingPool,
                reloadPool: reloadPool,
                receivingSlots: scanner.effectiveWorkers,
                ownScratch: ownScratch,
                scratchBase: scratchBase,
                configuration: configuration,
                fingerprint: fingerprint,
                logger: logger
            )
        } catch {
            try? await threadPool.shutdownGracefully()
            try? await receivingPool.shutdownGracefully()
            try? await reloadPool.shutdownGracefully()
            // The scratch directory made for this inspector alone (`airlock scan`, the quarantine commands): the
            // scanner process that failed to start may have created it.
            if let ownScratch { try? FileManager.default.removeItem(atPath: ownScratch) }
            throw error
        }
    }

    /// Builds a generation of parsers: scanner processes that load and compile the signatures (or, with isolation
    /// off, an engine here). Blocking: the compile takes as long as the database needs.
    static func buildGeneration(
        number: Int,
        configuration: AirlockConfiguration,
        scratchBase: String?,
        observers: [@Sendable (ScannerEvent) -> Void],
        logger: Logger
    ) throws -> ParserGeneration {
        let scanner = configuration.scanner
        let policy = TypePolicy(configuration.policy)
        if scanner.isolation.enabled {
            // Each generation's processes get their own scratch directories: an old one may still be scanning.
            let suffix = number == 1 ? "" : ".g\(number)"
            let directories = (0..<scanner.processes).map { index in
                ((scratchBase ?? NSTemporaryDirectory()) as NSString).appendingPathComponent("scanner-\(index)\(suffix)")
            }
            var supervisors: [ScannerSupervisor] = []
            do {
                for directory in directories {
                    let supervisor = try ScannerSupervisor(
                        settings: ScannerSettings(scanner: scanner, policy: configuration.policy, scratchDirectory: directory),
                        logger: logger
                    )
                    observers.forEach { supervisor.observe($0) }
                    supervisors.append(supervisor)
                }
            } catch {
                supervisors.forEach { $0.shutdown() }
                if number > 1 {
                    directories.forEach { try? FileManager.default.removeItem(atPath: $0) }
                }
                throw error
            }
            return ParserGeneration(
                number: number,
                host: .isolated(supervisors),
                signatures: supervisors[0].signatures,
                policy: policy,
                maxFileSize: scanner.maxFileSize,
                loadedAt: Date(),
                scratchDirectories: number == 1 ? [] : directories
            )
        }
        let parsers = try Parsers(scanner: scanner, policy: policy, temporaryDirectory: scratchBase, logger: logger)
        return ParserGeneration(
            number: number,
            host: .inProcess(parsers),
            signatures: parsers.signatures.info,
            policy: policy,
            maxFileSize: scanner.maxFileSize,
            loadedAt: Date(),
            scratchDirectories: []
        )
    }

    /// Stops the worker threads once queued inspections finish, then the scanner processes.
    public func shutdown() async throws {
        try await self.receivingPool.shutdownGracefully()
        // A reload in progress finishes first; then the generations it retired are drained.
        try await self.reloadPool.shutdownGracefully()
        let scratch = self.ownScratch
        try await self.threadPool.runIfActive {
            self.retiring.wait()
            if let serving = self.slot.install(nil) {
                self.slot.drain(serving)
                serving.shutdown()
            }
            if let scratch { try? FileManager.default.removeItem(atPath: scratch) }
        }
        try await self.threadPool.shutdownGracefully()
    }

    /// Calls `observer` on every scanner process event (crash, overrun, restart), in this generation of scanner
    /// processes and those later reloads start; nothing happens without isolation.
    public func observeScanner(_ observer: @escaping @Sendable (ScannerEvent) -> Void) {
        self.observers.withLock { $0.append(observer) }
        if case .isolated(let supervisors) = self.slot.newest.host {
            supervisors.forEach { $0.observe(observer) }
        }
    }

    /// The pids of the scanner processes serving now (empty without isolation, or while one restarts).
    public var scannerPIDs: [Int32] {
        guard case .isolated(let supervisors) = self.slot.newest.host else { return [] }
        return supervisors.compactMap(\.pid)
    }

    /// The confinement the first scanner process reported: its uid and Landlock ABI; nil without isolation.
    public var scannerConfinement: (uid: UInt32, landlockABI: Int32)? {
        guard let hello = self.slot.newest.host.supervisor?.confinement else { return nil }
        return (hello.uid, hello.landlockABI)
    }

    /// Has a scanner process try what its confinement must stop (open `path` for reading, connect to
    /// 127.0.0.1:`port`, execute `program`); each result is 0 when it worked, else its errno. Nil without isolation.
    public func probeScannerConfinement(path: String, port: Int, program: String) async throws -> (open: Int32, connect: Int32, exec: Int32)? {
        try await self.threadPool.runIfActive {
            self.slot.withGeneration(until: Date(timeIntervalSinceNow: self.waitForParsers), unavailable: { nil }) { generation in
                generation.host.supervisor?.probe(path: path, port: port, program: program)
            }
        }
    }

    /// Runs `body` with a lease on the parsers that serve now, waiting while a blocking reload compiles; an
    /// `unscannable` report when none come within `scanner.scanTimeoutSeconds`. Blocking.
    func withParsers(_ body: (ParserGeneration) -> ParserReport) -> ParserReport {
        self.slot.withGeneration(until: Date(timeIntervalSinceNow: self.waitForParsers), unavailable: Self.reloading, body)
    }

    static func reloading() -> ParserReport {
        ParserReport(
            size: -1,
            detectedType: nil,
            verdict: .unscannable(
                reason: "scanner unavailable: the signatures were being reloaded (scanner.reloadMode blocking) for longer "
                    + "than scanner.scanTimeoutSeconds; send the file again"
            )
        )
    }

    /// Inspects the file at `path`. Never throws: anything that goes wrong becomes an `unscannable` verdict.
    ///
    /// - Parameters:
    ///   - declaredType: the type the sender declared, checked for a mismatch; nil skips that check.
    ///   - sha256: the content's digest when the caller computed it already (while receiving); the file is then
    ///     not read here at all.
    ///   - describe: add libmagic's description of the type even when the verdict is clean.
    public func inspect(fileAt path: String, declaredType: String? = nil, sha256: String? = nil, describe: Bool = false) async -> InspectionReport {
        do {
            return try await self.threadPool.runIfActive {
                self.inspectBlocking(path: path, declaredType: declaredType, knownDigest: sha256, describe: describe)
            }
        } catch {
            return InspectionReport(size: 0, sha256: nil, detectedType: nil, verdict: .unscannable(reason: "scanner unavailable: \(error)"))
        }
    }

    /// Runs `body` on a scan worker thread: for work that inspects and records an upload in one step, without
    /// coming back to Swift's cooperative pool in between.
    public func runOnWorker<Result: Sendable>(_ body: @escaping @Sendable () throws -> Result) async throws -> Result {
        try await self.threadPool.runIfActive(body)
    }

    /// Inspects bytes held in memory, blocking the calling thread (a scan worker: see ``runOnWorker(_:)``).
    /// Never throws: anything that goes wrong becomes an `unscannable` verdict.
    ///
    /// - Parameters:
    ///   - declaredType: the type the sender declared, checked for a mismatch; nil skips that check.
    ///   - sha256: the content's digest, computed by the caller.
    public func inspectSynchronously(bytes: UnsafeRawBufferPointer, declaredType: String?, sha256: String) -> InspectionReport {
        let report = self.withParsers { $0.host.inspect(bytes: bytes, declaredType: declaredType, describe: false) }
        return InspectionReport(report, size: Int64(bytes.count), sha256: sha256)
    }

    /// Below this size an upload arrives faster than a scan could start alongside it: it is inspected afterwards.
    public static let minimumSizeToInspectWhileReceiving: Int64 = 256 << 10

    /// Starts inspecting an upload while it is still being received: type detection and the scan read the
    /// staging file as it grows, so they overlap the transfer instead of following it.
    ///
    /// Returns nil, and the caller inspects after the last byte as usual, when the size was not announced, is
    /// under ``minimumSizeToInspectWhileReceiving`` or over `scanner.maxFileSize`, or when every receiving slot (one per scan worker) is busy: a slow
    /// sender can hold a receiving slot, never a scan worker.
    public func beginInspection(of staging: StagingFile, declaredType: String?) -> InspectionInProgress? {
        guard let expected = staging.expectedSize, expected >= Self.minimumSizeToInspectWhileReceiving,
            expected <= Int64(self.slot.newest.maxFileSize)
        else { return nil }
        var current = self.receivingInFlight.load(ordering: .relaxed)
        while true {
            guard current < self.receivingSlots else { return nil }
            let (exchanged, original) = self.receivingInFlight.compareExchange(
                expected: current,
                desired: current + 1,
                ordering: .acquiringAndReleasing
            )
            if exchanged { break }
            current = original
        }
        let descriptor = open(staging.path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            self.receivingInFlight.subtract(1, ordering: .relaxed)
            return nil
        }
        let progress = staging.progress
        let stop = StopSignal()
        let path = staging.path
        let task = Task {
            defer {
                close(descriptor)
                self.receivingInFlight.subtract(1, ordering: .relaxed)
            }
            return try? await self.receivingPool.runIfActive {
                self.inspectWhileReceiving(
                    descriptor: descriptor,
                    length: Int(expected),
                    name: path,
                    progress: progress,
                    stop: stop,
                    declaredType: declaredType
                )
            } ?? nil
        }
        return InspectionInProgress(task: task, stop: stop, progress: progress)
    }

    private func inspectWhileReceiving(
        descriptor: Int32,
        length: Int,
        name: String,
        progress: StagingProgress,
        stop: StopSignal,
        declaredType: String?
    ) -> InspectionReport? {
        // The start of the upload, to recognise a repeat before any parser sees it.
        let headLength = min(MagicPool.sniffLength, length)
        guard progress.wait(forLength: Int64(headLength), stop: { stop.isStopped }) else { return nil }
        var head = [UInt8](repeating: 0, count: headLength)
        guard head.withUnsafeMutableBytes({ Parsers.readFully(descriptor, $0, offset: 0) }) == headLength else { return nil }
        let key = RecentHeads.Key(size: Int64(length), head: head)
        guard !self.recentlyClean.withLock({ $0.contains(key) }), !self.recentlyFailed.withLock({ $0.contains(key) }) else { return nil }

        guard let generation = self.slot.acquire(until: Date(timeIntervalSinceNow: self.waitForParsers)) else { return nil }
        defer { self.slot.release(generation) }
        guard generation.register(stop, progress) else { return nil }
        defer { generation.unregister(stop) }
        guard
            let report = generation.host.inspectWhileReceiving(
                descriptor: descriptor,
                length: length,
                name: name,
                progress: progress,
                stop: stop,
                declaredType: declaredType
            )
        else { return nil }
        if report.verdict == .clean {
            self.recentlyClean.withLock { $0.insert(key) }
        } else if report.scannerFailure {
            self.recentlyFailed.withLock { $0.insert(key) }
        }
        return InspectionReport(report, size: Int64(length), sha256: nil)
    }

    private func inspectBlocking(path: String, declaredType: String?, knownDigest: String?, describe: Bool) -> InspectionReport {
        // File metadata through Foundation: C's `struct stat` resolves through different clang modules depending
        // on build order, which MemberImportVisibility then rejects.
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path) else {
            return Self.unreadable(size: 0, "cannot open the file: it does not exist or is not readable")
        }
        guard attributes[.type] as? FileAttributeType == .typeRegular else {
            return Self.unreadable(size: 0, "not a regular file")
        }
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            return Self.unreadable(size: 0, "cannot open the file: \(String(cString: strerror(errno)))")
        }
        defer { close(descriptor) }

        // Hash every byte here (unless the digest is known): the parsers never see anything but the descriptor.
        var size = (attributes[.size] as? NSNumber)?.int64Value ?? 0
        let sha256: String
        if let knownDigest {
            sha256 = knownDigest
        } else {
            var hasher = SHA256()
            let chunkSize = 1 << 20
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 16)
            defer { buffer.deallocate() }
            size = 0
            while true {
                let count = read(descriptor, buffer.baseAddress, chunkSize)
                if count < 0 {
                    if errno == EINTR { continue }
                    return Self.unreadable(size: size, "cannot read the file: \(String(cString: strerror(errno)))")
                }
                if count == 0 { break }
                size += Int64(count)
                hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
            }
            sha256 = hasher.finalize().hexString
        }

        let report = self.withParsers { $0.host.inspect(descriptor: descriptor, name: path, declaredType: declaredType, describe: describe) }
        // Only sizes that can be inspected while received are ever looked up.
        if size >= Self.minimumSizeToInspectWhileReceiving, report.verdict == .clean || report.scannerFailure {
            var head = [UInt8](repeating: 0, count: Int(min(Int64(MagicPool.sniffLength), size)))
            if head.withUnsafeMutableBytes({ Parsers.readFully(descriptor, $0, offset: 0) }) == head.count {
                let key = RecentHeads.Key(size: size, head: head)
                if report.scannerFailure {
                    self.recentlyFailed.withLock { $0.insert(key) }
                } else {
                    self.recentlyClean.withLock { $0.insert(key) }
                }
            }
        }
        return InspectionReport(report, size: size, sha256: sha256)
    }

    private static func unreadable(size: Int64, _ reason: String) -> InspectionReport {
        InspectionReport(size: size, sha256: nil, detectedType: nil, verdict: .unscannable(reason: reason))
    }
}

extension InspectionReport {
    /// The parsers' report with the digest; a scanner failure (which knows no size) takes the known one.
    init(_ report: ParserReport, size: Int64, sha256: String?) {
        self.init(
            size: report.scannerFailure ? size : report.size,
            sha256: sha256,
            detectedType: report.detectedType,
            verdict: report.verdict,
            scannerFailure: report.scannerFailure,
            signatureVersion: report.signatureVersion
        )
    }
}

/// An inspection running while its upload is received (``Inspector/beginInspection(of:declaredType:)``).
public struct InspectionInProgress: Sendable {
    fileprivate let task: Task<InspectionReport?, Never>
    fileprivate let stop: StopSignal
    fileprivate let progress: StagingProgress

    /// The report once the scan has read the whole upload; nil when the inspection could not finish (the upload
    /// ended short, or ``cancel()`` was called), in which case the file must be inspected again.
    public func report() async -> InspectionReport? {
        await self.task.value
    }

    /// Stops the inspection (the verdict cache answered, or the upload failed) and waits until it has let go of
    /// the file.
    public func cancel() async {
        self.stop.stop()
        self.progress.wakeWaiters()
        _ = await self.task.value
    }
}

/// A flag an inspection checks while it waits for bytes.
final class StopSignal: Sendable {
    private let stopped = Atomic<Bool>(false)

    func stop() {
        self.stopped.store(true, ordering: .releasing)
    }

    var isStopped: Bool {
        self.stopped.load(ordering: .acquiring)
    }
}

/// A bounded set of (size, digest of the first bytes) keys, oldest forgotten first.
struct RecentHeads: ~Copyable {
    struct Key: Hashable {
        var size: Int64
        var digest: SHA256Digest

        init(size: Int64, head: [UInt8]) {
            self.size = size
            self.digest = SHA256.hash(data: head)
        }
    }

    private let capacity: Int
    private var keys: Set<Key> = []
    private var order: [Key] = []
    private var next = 0

    init(capacity: Int) {
        self.capacity = capacity
    }

    mutating func removeAll() {
        self.keys.removeAll()
        self.order.removeAll()
        self.next = 0
    }

    func contains(_ key: Key) -> Bool {
        self.keys.contains(key)
    }

    mutating func insert(_ key: Key) {
        guard self.keys.insert(key).inserted else { return }
        if self.order.count < self.capacity {
            self.order.append(key)
        } else {
            self.keys.remove(self.order[self.next])
            self.order[self.next] = key
            self.next = (self.next + 1) % self.capacity
        }
    }
}
