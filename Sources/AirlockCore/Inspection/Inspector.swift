import ClamAV
import Crypto
import Foundation
import LibMagic
public import Logging
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The inspection pipeline: size limit, SHA-256, detected type, policy, scan. Fails closed: any error or
/// limit hit is `unscannable`, never `clean`.
///
/// Blocking work (file reads, libmagic, libclamav) runs on a dedicated `NIOThreadPool` of `scanner.workers`
/// threads, never on Swift's cooperative pool.
public final class Inspector: Sendable {
    /// The loaded signatures.
    public let signatures: SignatureDatabase
    /// The type policy.
    public let policy: TypePolicy
    private let maxFileSize: Int
    private let magic: MagicPool
    private let threadPool: NIOThreadPool
    /// Threads for scans that read an upload while it is received; they may wait on the network, so they are
    /// kept apart from `threadPool` and their number bounds how many such scans run at once.
    private let receivingPool: NIOThreadPool
    private let receivingSlots: Int
    private let receivingInFlight = Atomic<Int>(0)
    /// Uploads recently scanned clean, by size and the digest of their start: a new upload that matches is
    /// probably a repeat that the verdict cache will answer, so no scan is started while it is received.
    private let recentlyClean = Mutex(RecentHeads(capacity: 4096))
    private let logger: Logger

    private init(
        signatures: SignatureDatabase,
        policy: TypePolicy,
        maxFileSize: Int,
        magic: MagicPool,
        threadPool: NIOThreadPool,
        receivingPool: NIOThreadPool,
        receivingSlots: Int,
        logger: Logger
    ) {
        self.signatures = signatures
        self.policy = policy
        self.maxFileSize = maxFileSize
        self.magic = magic
        self.threadPool = threadPool
        self.receivingPool = receivingPool
        self.receivingSlots = receivingSlots
        self.logger = logger
    }

    /// Starts the worker threads and loads the signatures; call ``shutdown()`` when done.
    ///
    /// - Parameter temporaryDirectory: where libclamav extracts what it scans inside files; nil for its default
    ///   (`$TMPDIR` or `/tmp`).
    /// - Throws: ``SignatureDatabaseError`` or `MagicError` when the engine or libmagic cannot be set up.
    public static func start(configuration: AirlockConfiguration, temporaryDirectory: String? = nil, logger: Logger) async throws -> Inspector {
        let threadPool = NIOThreadPool(numberOfThreads: configuration.scanner.effectiveWorkers)
        threadPool.start()
        let receivingPool = NIOThreadPool(numberOfThreads: configuration.scanner.effectiveWorkers)
        receivingPool.start()
        do {
            let (signatures, magic) = try await threadPool.runIfActive {
                (try SignatureDatabase.load(configuration.scanner, temporaryDirectory: temporaryDirectory, logger: logger), try MagicPool())
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
                maxFileSize: configuration.scanner.maxFileSize,
                magic: magic,
                threadPool: threadPool,
                receivingPool: receivingPool,
                receivingSlots: configuration.scanner.effectiveWorkers,
                logger: logger
            )
        } catch {
            try? await threadPool.shutdownGracefully()
            try? await receivingPool.shutdownGracefully()
            throw error
        }
    }

    /// Stops the worker threads once queued inspections finish.
    public func shutdown() async throws {
        try await self.receivingPool.shutdownGracefully()
        try await self.threadPool.shutdownGracefully()
    }

    /// Inspects the file at `path`. Never throws: anything that goes wrong becomes an `unscannable` verdict.
    ///
    /// - Parameters:
    ///   - declaredType: the type the sender declared, checked for a mismatch; nil skips that check.
    ///   - sha256: the content's digest when the caller computed it already (while receiving); the file is then
    ///     not hashed again, only its start is read for type detection before the scan.
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
        let head = UnsafeRawBufferPointer(rebasing: bytes.prefix(MagicPool.sniffLength))
        let detected = self.identify(head)
        let scanVerdict: Verdict
        if bytes.count > self.maxFileSize {
            scanVerdict = .unscannable(reason: "file is \(bytes.count) bytes, over scanner.maxFileSize (\(self.maxFileSize))")
        } else {
            scanVerdict = self.scan(name: "upload") { (engine) throws(ClamAVError) in try engine.scan(bytes: bytes, name: nil) }
        }
        let verdict = self.decide(scanVerdict, detected, declaredType)
        return InspectionReport(
            size: Int64(bytes.count),
            sha256: sha256,
            detectedType: self.described(detected, head: head, verdict: verdict, always: false),
            verdict: verdict
        )
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
        var failed = false
        // Blocks until the requested bytes are on disk; -1 (the scan fails, the result is discarded) when the
        // upload ends short or the inspection is no longer wanted.
        let read: (UnsafeMutableRawBufferPointer, Int) -> Int = { buffer, offset in
            guard progress.wait(forLength: Int64(offset + buffer.count), stop: { stop.isStopped }) else {
                // libclamav logs the errno with the failed read: "pread error: Operation canceled".
                failed = true
                errno = ECANCELED
                return -1
            }
            var done = 0
            while done < buffer.count {
                let count = pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
                if count < 0, errno == EINTR { continue }
                guard count > 0 else {
                    failed = true
                    return -1
                }
                done += count
            }
            return done
        }
        var head = [UInt8](repeating: 0, count: min(MagicPool.sniffLength, length))
        guard head.withUnsafeMutableBytes({ read($0, 0) }) == head.count else { return nil }
        let key = RecentHeads.Key(size: Int64(length), head: head)
        guard !self.recentlyClean.withLock({ $0.contains(key) }) else { return nil }
        let detected = self.identify(head)
        let scanVerdict = self.scan(name: name) { (engine) throws(ClamAVError) in try engine.scan(length: length, name: name, read: read) }
        guard !failed else { return nil }
        if scanVerdict == .clean {
            self.recentlyClean.withLock { $0.insert(key) }
        }
        let verdict = self.decide(scanVerdict, detected, declaredType)
        return InspectionReport(
            size: Int64(length),
            sha256: nil,
            detectedType: self.described(detected, head: head, verdict: verdict, always: false),
            verdict: verdict
        )
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
        var size: Int64 = 0

        // One pass: hash every byte (unless the digest is known), keep the start for libmagic.
        var hasher = SHA256()
        var head: [UInt8] = []
        let chunkSize = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 16)
        defer { buffer.deallocate() }
        while knownDigest == nil || head.count < MagicPool.sniffLength {
            let count = read(descriptor, buffer.baseAddress, chunkSize)
            if count < 0 {
                if errno == EINTR { continue }
                return Self.unreadable(size: size, "cannot read the file: \(String(cString: strerror(errno)))")
            }
            if count == 0 { break }
            size += Int64(count)
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<count])
            hasher.update(bufferPointer: chunk)
            if head.count < MagicPool.sniffLength {
                head.append(contentsOf: chunk.prefix(MagicPool.sniffLength - head.count))
            }
        }
        let sha256: String
        if let knownDigest {
            sha256 = knownDigest
            size = (attributes[.size] as? NSNumber)?.int64Value ?? size
        } else {
            sha256 = hasher.finalize().hexString
        }

        let detected = self.identify(head)
        let scanVerdict: Verdict
        if size > Int64(self.maxFileSize) {
            scanVerdict = .unscannable(reason: "file is \(size) bytes, over scanner.maxFileSize (\(self.maxFileSize))")
        } else if lseek(descriptor, 0, SEEK_SET) != 0 {
            scanVerdict = .unscannable(reason: "cannot rewind the file: \(String(cString: strerror(errno)))")
        } else {
            scanVerdict = self.scan(name: path) { (engine) throws(ClamAVError) in try engine.scan(fileDescriptor: descriptor, name: path) }
            // Only sizes that can be inspected while received are ever looked up.
            if scanVerdict == .clean, size >= Self.minimumSizeToInspectWhileReceiving {
                let key = RecentHeads.Key(size: size, head: head)
                self.recentlyClean.withLock { $0.insert(key) }
            }
        }
        let verdict = self.decide(scanVerdict, detected, declaredType)
        return InspectionReport(
            size: size,
            sha256: sha256,
            detectedType: self.described(detected, head: head, verdict: verdict, always: describe),
            verdict: verdict
        )
    }

    /// libmagic's type for the start of a file; nil when detection fails.
    private func identify(_ head: [UInt8]) -> FileType? {
        head.withUnsafeBytes { self.identify($0) }
    }

    private func identify(_ head: UnsafeRawBufferPointer) -> FileType? {
        do {
            return try self.magic.identify(head, describe: false)
        } catch {
            self.logger.error("type detection failed", metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// Adds libmagic's description to a detected type: for files an admin will look at (anything not clean), or
    /// everything when `always`. Clean hand-offs skip it, since it costs libmagic as much again as the type.
    private func described(_ type: FileType?, head: [UInt8], verdict: Verdict, always: Bool) -> FileType? {
        head.withUnsafeBytes { self.described(type, head: $0, verdict: verdict, always: always) }
    }

    private func described(_ type: FileType?, head: UnsafeRawBufferPointer, verdict: Verdict, always: Bool) -> FileType? {
        guard let type, always || !verdict.isClean else { return type }
        let description = try? self.magic.describe(head)
        return FileType(mimeType: type.mimeType, description: description)
    }

    /// The verdict from the scan's, the detected type and the policy: infected > blocked > unscannable > clean.
    private func decide(_ scanVerdict: Verdict, _ detected: FileType?, _ declaredType: String?) -> Verdict {
        let blockReason = detected.flatMap { self.policy.blockReason(declaredType: declaredType, detectedType: $0.mimeType) }
        switch (scanVerdict, blockReason, detected) {
        case (.infected, _, _):
            return scanVerdict
        case (_, .some(let reason), _):
            return .blocked(reason: reason)
        case (.unscannable, nil, _):
            return scanVerdict
        case (_, nil, nil):
            return .unscannable(reason: "file type could not be detected")
        default:
            return scanVerdict
        }
    }

    private func scan(name: String, _ body: (ClamAVEngine) throws(ClamAVError) -> ScanResult) -> Verdict {
        do {
            switch try body(self.signatures.engine) {
            case .clean:
                return .clean
            case .virus(let signature):
                return .infected(signature: signature)
            case .heuristic(let name):
                return .unscannable(reason: name)
            case .uninspectable(let reason):
                return .unscannable(reason: reason)
            }
        } catch {
            self.logger.error("scan failed", metadata: ["error": "\(error)"])
            return .unscannable(reason: error.isTimeout ? "scan timed out" : "scanner error: \(error.message)")
        }
    }

    private static func unreadable(size: Int64, _ reason: String) -> InspectionReport {
        InspectionReport(size: size, sha256: nil, detectedType: nil, verdict: .unscannable(reason: reason))
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
