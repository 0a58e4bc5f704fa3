import Crypto
import Foundation
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
        case .inProcess(let parsers): parsers.inspect(bytes: bytes, declaredType: declaredType, describe: describe)
        case .isolated(let supervisors): Self.leastBusy(supervisors).inspect(bytes: bytes, declaredType: declaredType, describe: describe)
        }
    }

    func inspect(descriptor: Int32, name: String, declaredType: String?, describe: Bool) -> ParserReport {
        switch self {
        case .inProcess(let parsers): parsers.inspect(descriptor: descriptor, name: name, declaredType: declaredType, describe: describe)
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
        }
    }
}

/// The inspection pipeline: size limit, SHA-256, then the parsers (detected type, scan, policy). Fails closed: any
/// error, limit hit, scanner crash or overrun is `unscannable`, never `clean`.
///
/// With `scanner.isolation.enabled` (the default) the parsers run in supervised, confined scanner processes
/// (``ScannerService``) that get each file as a descriptor; this process only hashes. Blocking work runs on
/// dedicated `NIOThreadPool`s, never on Swift's cooperative pool.
public final class Inspector: Sendable {
    /// The loaded signatures.
    public let signatures: SignatureInfo
    /// The type policy.
    public let policy: TypePolicy
    let host: ParserHost
    private let maxFileSize: Int
    private let threadPool: NIOThreadPool
    /// Threads for scans that read an upload while it is received; they may wait on the network, so they are
    /// kept apart from `threadPool` and their number bounds how many such scans run at once.
    private let receivingPool: NIOThreadPool
    private let receivingSlots: Int
    private let receivingInFlight = Atomic<Int>(0)
    /// Uploads recently scanned clean, by size and the digest of their start: a new upload that matches is
    /// probably a repeat that the verdict cache will answer, so no scan is started while it is received.
    private let recentlyClean = Mutex(RecentHeads(capacity: 4096))
    /// Uploads on which the scanner recently died or overran: a repeat is inspected only after its last byte, when
    /// its digest is known and the remembered verdict answers, so it cannot crash the scanner while received.
    private let recentlyFailed = Mutex(RecentHeads(capacity: 1024))
    /// The scanners' scratch directory when it was made for this inspector alone (removed at shutdown).
    private let ownScratch: String?
    private let logger: Logger

    private init(
        signatures: SignatureInfo,
        policy: TypePolicy,
        host: ParserHost,
        maxFileSize: Int,
        threadPool: NIOThreadPool,
        receivingPool: NIOThreadPool,
        receivingSlots: Int,
        ownScratch: String?,
        logger: Logger
    ) {
        self.ownScratch = ownScratch
        self.signatures = signatures
        self.policy = policy
        self.host = host
        self.maxFileSize = maxFileSize
        self.threadPool = threadPool
        self.receivingPool = receivingPool
        self.receivingSlots = receivingSlots
        self.logger = logger
    }

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
        do {
            let host: ParserHost
            let signatures: SignatureInfo
            var ownScratch: String?
            if isolated {
                if temporaryDirectory == nil {
                    ownScratch = (NSTemporaryDirectory() as NSString).appendingPathComponent(
                        "airlock-scanner-\(getpid())-\(UUID().uuidString.prefix(8))"
                    )
                }
                let scratch = temporaryDirectory ?? ownScratch!
                let supervisors = try await threadPool.runIfActive {
                    try (0..<scanner.processes).map { index in
                        try ScannerSupervisor(
                            settings: ScannerSettings(
                                scanner: scanner,
                                policy: configuration.policy,
                                scratchDirectory: (scratch as NSString).appendingPathComponent("scanner-\(index)")
                            ),
                            logger: logger
                        )
                    }
                }
                host = .isolated(supervisors)
                signatures = supervisors[0].signatures
            } else {
                let parsers = try await threadPool.runIfActive {
                    try Parsers(scanner: scanner, policy: TypePolicy(configuration.policy), temporaryDirectory: temporaryDirectory, logger: logger)
                }
                host = .inProcess(parsers)
                signatures = parsers.signatures.info
            }
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
                signatures: signatures,
                policy: TypePolicy(configuration.policy),
                host: host,
                maxFileSize: scanner.maxFileSize,
                threadPool: threadPool,
                receivingPool: receivingPool,
                receivingSlots: scanner.effectiveWorkers,
                ownScratch: ownScratch,
                logger: logger
            )
        } catch {
            try? await threadPool.shutdownGracefully()
            try? await receivingPool.shutdownGracefully()
            throw error
        }
    }

    /// Stops the worker threads once queued inspections finish, then the scanner processes.
    public func shutdown() async throws {
        try await self.receivingPool.shutdownGracefully()
        if case .isolated(let supervisors) = self.host {
            let scratch = self.ownScratch
            try await self.threadPool.runIfActive {
                supervisors.forEach { $0.shutdown() }
                if let scratch { try? FileManager.default.removeItem(atPath: scratch) }
            }
        }
        try await self.threadPool.shutdownGracefully()
    }

    /// Calls `observer` on every scanner process event (crash, overrun, restart); nothing happens without isolation.
    public func observeScanner(_ observer: @escaping @Sendable (ScannerEvent) -> Void) {
        if case .isolated(let supervisors) = self.host {
            supervisors.forEach { $0.observe(observer) }
        }
    }

    /// The pids of the scanner processes serving now (empty without isolation, or while one restarts).
    public var scannerPIDs: [Int32] {
        guard case .isolated(let supervisors) = self.host else { return [] }
        return supervisors.compactMap(\.pid)
    }

    /// The confinement the first scanner process reported: its uid and Landlock ABI; nil without isolation.
    public var scannerConfinement: (uid: UInt32, landlockABI: Int32)? {
        guard let hello = self.host.supervisor?.confinement else { return nil }
        return (hello.uid, hello.landlockABI)
    }

    /// Has a scanner process try what its confinement must stop (open `path` for reading, connect to
    /// 127.0.0.1:`port`, execute `program`); each result is 0 when it worked, else its errno. Nil without isolation.
    public func probeScannerConfinement(path: String, port: Int, program: String) async throws -> (open: Int32, connect: Int32, exec: Int32)? {
        guard let supervisor = self.host.supervisor else { return nil }
        return try await self.threadPool.runIfActive { supervisor.probe(path: path, port: port, program: program) }
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
        let report = self.host.inspect(bytes: bytes, declaredType: declaredType, describe: false)
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
        guard let expected = staging.expectedSize, expected >= Self.minimumSizeToInspectWhileReceiving, expected <= Int64(self.maxFileSize)
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

        guard
            let report = self.host.inspectWhileReceiving(
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

        let report = self.host.inspect(descriptor: descriptor, name: path, declaredType: declaredType, describe: describe)
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
            scannerFailure: report.scannerFailure
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
