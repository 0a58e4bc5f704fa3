import CAirlockSandbox
import Foundation
public import Logging
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Something that happened to a scanner process, for logs, metrics and the audit log.
public enum ScannerEvent: Sendable {
    /// It died (a signal, an exit, the memory limit) with scans in flight; they are retried once.
    case crashed(pid: Int32, cause: ScannerExit, scansInFlight: Int)
    /// A scan went over `scanner.scanTimeoutSeconds`: the process was killed.
    case timedOut(pid: Int32, scansInFlight: Int)
    /// A (new) scanner process is serving.
    case started(pid: Int32)
}

/// How a scanner process ended.
public struct ScannerExit: Sendable, CustomStringConvertible {
    /// The signal that ended it, if one did.
    public var signal: Int32?
    /// Its exit status, if it exited.
    public var status: Int32?

    /// A short label (`signal 11`, `exit status 2`, `unknown`), for metrics.
    public var label: String {
        if let signal { return "signal \(signal)" }
        if let status { return "exit status \(status)" }
        return "unknown"
    }

    public var description: String {
        if let signal { return "signal \(signal) (\(String(cString: strsignal(signal))))" }
        return self.label
    }
}

/// The broker's side of one scanner process: starts it, passes it files (as descriptors, or small bodies in the
/// message), restarts it with backoff when it dies, kills it when a scan overruns `scanner.scanTimeoutSeconds`,
/// and retries the scans that were in flight once. A file whose scan saw the scanner die twice is unscannable.
///
/// Every method blocks: call them on threads of their own (the inspector's pools), never on the cooperative pool.
final class ScannerSupervisor: @unchecked Sendable {
    // Invariant that makes this Sendable: `connection`, `shuttingDown` and `lastFailure` are read and written with
    // `condition` locked; the rest is immutable or atomic.
    private let condition = NSCondition()
    private var connection: ScannerConnection?
    private var shuttingDown = false
    private var lastFailure: String?
    private let settings: ScannerSettings
    private let executable: String
    private let timeout: Duration
    private let logger: Logger
    private let nextId = Atomic<UInt64>(1)
    private let observers: Mutex<[@Sendable (ScannerEvent) -> Void]>
    /// Signalled when the supervising thread has reaped the last process.
    private let finished = DispatchSemaphore(value: 0)
    /// The loaded signatures, as the first process reported them.
    let signatures: SignatureInfo
    /// What the first process reported about its confinement.
    let confinement: ScannerHello

    /// The messages for the two outcomes that are remembered for the content's digest.
    static let crashReason = "the scanner crashed while parsing this file"
    static func timeoutReason(_ seconds: Int) -> String {
        "scan timed out: the scanner was stopped after scanner.scanTimeoutSeconds (\(seconds) s)"
    }

    /// Starts the first scanner process and waits until its signatures are loaded.
    ///
    /// - Throws: ``ScannerStartError`` with the scanner's own message (signatures missing or corrupt, the user
    ///   unknown, the sandbox refused).
    init(settings: ScannerSettings, logger: Logger) throws {
        self.settings = settings
        self.executable = try Self.executablePath()
        self.timeout = .seconds(settings.scanner.scanTimeoutSeconds)
        self.logger = logger
        self.observers = Mutex([])
        let (connection, hello) = try Self.spawn(settings: settings, executable: self.executable, logger: logger)
        self.signatures = hello.signatures
        self.confinement = hello
        self.connection = connection
        Thread.detachNewThread {
            self.supervise(connection)
            self.finished.signal()
        }
    }

    /// Calls `observer` for every event from now on.
    func observe(_ observer: @escaping @Sendable (ScannerEvent) -> Void) {
        self.observers.withLock { $0.append(observer) }
    }

    /// The pid of the process serving now, if one is.
    var pid: Int32? {
        self.condition.lock()
        defer { self.condition.unlock() }
        return self.connection?.pid
    }

    /// Scans in flight in the current process (to pick the least busy of several).
    var load: Int {
        self.condition.lock()
        defer { self.condition.unlock() }
        return self.connection?.inFlight ?? 0
    }

    /// Stops the scanner and waits until it has exited: it sees the end of its socket; requests still waiting fail.
    func shutdown() {
        self.condition.lock()
        self.shuttingDown = true
        let connection = self.connection
        self.condition.broadcast()
        self.condition.unlock()
        connection?.closeForShutdown()
        self.finished.wait()
    }

    // MARK: - Requests

    /// Inspects bytes held in memory (they travel in the message).
    func inspect(bytes: UnsafeRawBufferPointer, declaredType: String?, describe: Bool) -> ParserReport {
        // Only a stream is ever abandoned.
        self.withRetry { id in
            var message = WireWriter(.scanBytes, id: id)
            message.string(declaredType)
            message.bool(describe)
            message.data(bytes)
            return (message, -1)
        }!
    }

    /// Inspects an open file (its descriptor is passed; no byte is copied).
    func inspect(descriptor: Int32, name: String, declaredType: String?, describe: Bool) -> ParserReport {
        // Only a stream is ever abandoned.
        self.withRetry { id in
            var message = WireWriter(.scanFile, id: id)
            message.string(declaredType)
            message.bool(describe)
            message.string(name)
            return (message, descriptor)
        }!
    }

    /// Inspects an upload while it is received: the scanner reads the staging file as the broker reports it
    /// growing. Nil when the inspection could not finish (the upload ended short, or `stop`).
    func inspectWhileReceiving(descriptor: Int32, length: Int, name: String, progress: StagingProgress, stop: StopSignal, declaredType: String?)
        -> ParserReport?
    {
        var abandoned = false
        let report = self.withRetry(
            { id in
                var message = WireWriter(.scanStream, id: id)
                message.string(declaredType)
                message.integer(Int64(length))
                message.string(name)
                return (message, descriptor)
            },
            feed: { connection, id, waiter in
                var sent: Int64 = 0
                while !waiter.hasReply {
                    let (written, ended) = progress.state
                    if written > sent {
                        var message = WireWriter(.streamAvailable, id: id)
                        message.integer(written)
                        connection.send(message)
                        sent = written
                    }
                    if sent >= Int64(length) { return }
                    if ended || stop.isStopped {
                        abandoned = true
                        connection.send(WireWriter(.streamAbandon, id: id))
                        return
                    }
                    progress.waitForChange(beyond: sent) { stop.isStopped || waiter.hasReply }
                }
            },
            wake: { progress.wakeWaiters() }
        )
        // Given up by the broker: whatever the scanner made of a partial upload means nothing.
        return abandoned ? nil : report
    }

    /// Asks the scanner to try what its confinement should stop: open `path`, connect to 127.0.0.1:`port`, execute
    /// `program`. Each value is 0 when the action succeeded, or its errno.
    func probe(path: String, port: Int, program: String) -> (open: Int32, connect: Int32, exec: Int32)? {
        guard let connection = self.awaitConnection(until: .now + self.timeout) else { return nil }
        let id = self.nextId.add(1, ordering: .relaxed).newValue
        let waiter = ScannerWaiter()
        guard connection.register(id, waiter) else { return nil }
        defer { connection.unregister(id) }
        var message = WireWriter(.probe, id: id)
        message.string(path)
        message.integer(UInt16(port))
        message.string(program)
        connection.send(message)
        guard case .probe(let open, let connect, let exec) = waiter.wait(until: .now + self.timeout) else { return nil }
        return (open, connect, exec)
    }

    private func withRetry(
        _ message: (UInt64) -> (WireWriter, Int32),
        feed: ((ScannerConnection, UInt64, ScannerWaiter) -> Void)? = nil,
        wake: (@Sendable () -> Void)? = nil
    ) -> ParserReport? {
        var failures = 0
        var freeRetries = 0
        while true {
            let outcome = self.exchange(message, feed: feed, wake: wake)
            switch outcome {
            case .report(let report):
                return report
            case .abandoned:
                return nil
            case .unavailable(let reason):
                return ParserReport(size: -1, detectedType: nil, verdict: .unscannable(reason: "scanner unavailable: \(reason)"))
            case .lost(started: false) where freeRetries < 3:
                // Queued, not yet started, when the process died: this file is not to blame.
                freeRetries += 1
            case .lost, .timedOut:
                failures += 1
                guard failures >= 2 else { continue }
                let reason =
                    if case .timedOut = outcome { Self.timeoutReason(self.settings.scanner.scanTimeoutSeconds) } else { Self.crashReason }
                return ParserReport(size: -1, detectedType: nil, verdict: .unscannable(reason: reason), scannerFailure: true)
            }
        }
    }

    private enum Outcome {
        case report(ParserReport)
        case abandoned
        case lost(started: Bool)
        case timedOut
        case unavailable(String)
    }

    /// One attempt: send, feed a stream, wait for the answer within the time limit (counted from when the scanner
    /// started the scan, or from when the request was sent if it never did; for a stream, from its last byte).
    private func exchange(
        _ message: (UInt64) -> (WireWriter, Int32),
        feed: ((ScannerConnection, UInt64, ScannerWaiter) -> Void)?,
        wake: (@Sendable () -> Void)?
    ) -> Outcome {
        guard let connection = self.awaitConnection(until: .now + self.timeout) else {
            self.condition.lock()
            let reason = self.shuttingDown ? "the broker is shutting down" : (self.lastFailure ?? "no scanner process is running")
            self.condition.unlock()
            return .unavailable(reason)
        }
        let id = self.nextId.add(1, ordering: .relaxed).newValue
        let waiter = ScannerWaiter(wake: wake)
        guard connection.register(id, waiter) else { return .lost(started: false) }
        defer { connection.unregister(id) }
        let (request, descriptor) = message(id)
        connection.send(request, descriptor: descriptor)
        feed?(connection, id, waiter)
        let sentAt = ContinuousClock.now
        // `started` may arrive while waiting and move the deadline.
        let deadline = { (waiter.startedAt.map { max($0, sentAt) } ?? sentAt) + self.timeout }
        while true {
            switch waiter.wait(until: deadline()) {
            case .report(var report):
                report.signatureVersion = connection.signatures?.version
                return .report(report)
            case .abandoned:
                return .abandoned
            case .lost:
                return waiter.timedOut ? .timedOut : .lost(started: waiter.startedAt != nil)
            case .probe:
                return .lost(started: false)
            case nil:
                if ContinuousClock.now < deadline() { continue }
                // Over the limit: libclamav's own limit is cooperative and misses loops inside parsers.
                waiter.timedOut = true
                connection.kill(timedOut: true)
            }
        }
    }

    /// The connection to a live scanner, waiting while one restarts; nil at `deadline` or when shutting down.
    private func awaitConnection(until deadline: ContinuousClock.Instant) -> ScannerConnection? {
        self.condition.lock()
        defer { self.condition.unlock() }
        while self.connection == nil {
            if self.shuttingDown { return nil }
            let remaining = ContinuousClock.now.duration(to: deadline)
            guard remaining > .zero else { return nil }
            _ = self.condition.wait(until: Date(timeIntervalSinceNow: remaining.seconds))
        }
        return self.connection
    }

    // MARK: - The process

    /// Reads one process's answers until it dies, then starts the next (with backoff); runs on a thread of its own
    /// for the broker's lifetime.
    private func supervise(_ first: ScannerConnection) {
        var connection = first
        var recentCrashes: [ContinuousClock.Instant] = []
        while true {
            connection.readAnswers()
            let status = connection.reap()
            let victims = connection.markLost()
            self.condition.lock()
            self.connection = nil
            let shuttingDown = self.shuttingDown
            self.condition.unlock()
            if shuttingDown { return }

            let event: ScannerEvent =
                connection.killedForTimeout
                ? .timedOut(pid: connection.pid, scansInFlight: victims)
                : .crashed(pid: connection.pid, cause: status, scansInFlight: victims)
            self.logger.error(
                connection.killedForTimeout
                    ? "a scan overran scanner.scanTimeoutSeconds: the scanner was killed and is restarted"
                    : "the scanner process died; restarting it",
                metadata: ["pid": "\(connection.pid)", "cause": "\(status)", "scansInFlight": "\(victims)"]
            )
            self.notify(event)

            // Backoff: at once after a lone crash, doubling up to 5 s while crashes come within 30 s of each other.
            let now = ContinuousClock.now
            recentCrashes = recentCrashes.filter { $0.duration(to: now) < .seconds(30) } + [now]
            var delay: Duration = recentCrashes.count <= 1 ? .zero : .milliseconds(100) * (1 << min(recentCrashes.count - 2, 6))
            while true {
                if delay > .zero {
                    Thread.sleep(forTimeInterval: min(delay, .seconds(5)).seconds)
                }
                self.condition.lock()
                if self.shuttingDown {
                    self.condition.unlock()
                    return
                }
                self.condition.unlock()
                do {
                    let (next, hello) = try Self.spawn(settings: self.settings, executable: self.executable, logger: self.logger)
                    if hello.signatures != self.signatures {
                        self.logger.warning(
                            "the restarted scanner loaded other signatures than the first",
                            metadata: ["version": "\(hello.signatures.version)"]
                        )
                    }
                    connection = next
                    self.condition.lock()
                    self.connection = next
                    self.lastFailure = nil
                    self.condition.broadcast()
                    self.condition.unlock()
                    self.notify(.started(pid: next.pid))
                    break
                } catch {
                    self.logger.error("cannot restart the scanner process; trying again", metadata: ["error": "\(error)"])
                    self.condition.lock()
                    self.lastFailure = "\(error)"
                    self.condition.unlock()
                    delay = max(.milliseconds(500), delay * 2)
                }
            }
        }
    }

    private func notify(_ event: ScannerEvent) {
        for observer in self.observers.withLock({ $0 }) {
            observer(event)
        }
    }

    /// Starts a scanner process, hands it its settings and waits for its signatures to load.
    private static func spawn(settings: ScannerSettings, executable: String, logger: Logger) throws -> (ScannerConnection, ScannerHello) {
        try Self.prepareScratch(settings)
        var pair: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
            throw ScannerStartError("cannot create the scanner's socket: \(String(cString: strerror(errno)))")
        }
        let arguments = [executable, "scanner-process", "--parent", "\(getpid())"]
        // No configuration, no environment: nothing secret crosses.
        let environment = ["LANG=C", "SWIFT_BACKTRACE=enable=no"]
        let pid = withCStringArray(arguments) { argv in
            withCStringArray(environment) { envp in airlock_spawn_scanner(executable, argv, envp, pair[1]) }
        }
        let spawnError = errno
        close(pair[1])
        guard pid > 0 else {
            close(pair[0])
            throw ScannerStartError("cannot start the scanner process \(executable): \(String(cString: strerror(spawnError)))")
        }
        let connection = ScannerConnection(pid: pid, socket: pair[0])
        do {
            let json = try JSONEncoder().encode(settings)
            var message = WireWriter(.settings, id: 0)
            json.withUnsafeBytes { message.data($0) }
            connection.send(message)
            let hello = try connection.awaitHello()
            connection.signatures = hello.signatures
            logger.info(
                "scanner process ready",
                metadata: [
                    "pid": "\(pid)", "uid": "\(hello.uid)", "landlock": "\(hello.landlockABI)",
                    "signatures": "\(hello.signatures.signatureCount)", "typeDetection": "\(hello.typeDetection ?? "unknown")",
                ]
            )
            return (connection, hello)
        } catch {
            connection.kill(timedOut: false)
            _ = connection.reap()
            throw error
        }
    }

    /// Empties the scratch directory (a crashed scan leaves its extractions) and gives it to the scanner's user.
    private static func prepareScratch(_ settings: ScannerSettings) throws {
        let path = settings.scratchDirectory
        let manager = FileManager.default
        if manager.fileExists(atPath: path) {
            for name in (try? manager.contentsOfDirectory(atPath: path)) ?? [] {
                try? manager.removeItem(atPath: (path as NSString).appendingPathComponent(name))
            }
        } else {
            do {
                try manager.createDirectory(atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw ScannerStartError("cannot create the scanner's scratch directory \(path): \(error.localizedDescription)")
            }
        }
        if getuid() == 0 {
            guard let entry = getpwnam(settings.scanner.isolation.user) else {
                throw ScannerStartError(
                    "scanner.isolation.user \(settings.scanner.isolation.user) does not exist: create it (useradd --system) or name another user"
                )
            }
            guard chown(path, entry.pointee.pw_uid, entry.pointee.pw_gid) == 0 else {
                throw ScannerStartError("cannot give \(path) to \(settings.scanner.isolation.user): \(String(cString: strerror(errno)))")
            }
        }
        chmod(path, 0o700)
    }

    /// The `airlock` executable: this process when it is airlock, else the one beside it (tests).
    static func executablePath() throws -> String {
        let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        if me.lastPathComponent == "airlock" { return me.path }
        let beside = me.deletingLastPathComponent().appendingPathComponent("airlock").path
        guard FileManager.default.isExecutableFile(atPath: beside) else {
            throw ScannerStartError(
                "the scanner process is the airlock executable, which is not at \(beside): build it (swift build --product airlock), "
                    + "or set scanner.isolation.enabled to false (debugging only)"
            )
        }
        return beside
    }

}

/// Lends `strings` to C as a NULL-terminated `char *const []`.
func withCStringArray<Result>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> Result) -> Result {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { pointers.forEach { free($0) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

extension Duration {
    /// The duration in seconds, as a floating-point number.
    public var seconds: Double {
        let (seconds, attoseconds) = self.components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// One answer from the scanner.
enum ScannerReply {
    case report(ParserReport)
    case abandoned
    case probe(Int32, Int32, Int32)
    case lost
}

/// A request waiting for its answer.
final class ScannerWaiter: @unchecked Sendable {
    // Invariant that makes this Sendable: every field but `wake` is read and written with `condition` locked.
    private let condition = NSCondition()
    private var reply: ScannerReply?
    private var started: ContinuousClock.Instant?
    private var overran = false
    private let wake: (@Sendable () -> Void)?

    init(wake: (@Sendable () -> Void)? = nil) {
        self.wake = wake
    }

    var hasReply: Bool {
        self.condition.lock()
        defer { self.condition.unlock() }
        return self.reply != nil
    }

    var startedAt: ContinuousClock.Instant? {
        self.condition.lock()
        defer { self.condition.unlock() }
        return self.started
    }

    var timedOut: Bool {
        get {
            self.condition.lock()
            defer { self.condition.unlock() }
            return self.overran
        }
        set {
            self.condition.lock()
            self.overran = newValue
            self.condition.unlock()
        }
    }

    func markStarted() {
        self.condition.lock()
        self.started = .now
        self.condition.unlock()
    }

    func deliver(_ reply: ScannerReply) {
        self.condition.lock()
        if self.reply == nil {
            self.reply = reply
        }
        self.condition.broadcast()
        self.condition.unlock()
        self.wake?()
    }

    /// The answer, or nil at `deadline`.
    func wait(until deadline: ContinuousClock.Instant) -> ScannerReply? {
        self.condition.lock()
        defer { self.condition.unlock() }
        while self.reply == nil {
            let remaining = ContinuousClock.now.duration(to: deadline)
            guard remaining > .zero else { return nil }
            _ = self.condition.wait(until: Date(timeIntervalSinceNow: remaining.seconds))
        }
        return self.reply
    }
}

/// A running scanner process and its socket.
final class ScannerConnection: @unchecked Sendable {
    // Invariant that makes this Sendable: `waiters`, `lost` and `killedForTimeout` are read and written with `lock`
    // held; sends are serialised by `sendLock`; the socket is closed only after the reader has stopped.
    let pid: Int32
    /// The signatures this process loaded: set once, from its hello, before the connection is used.
    var signatures: SignatureInfo?
    private let socket: Int32
    private let lock = NSLock()
    private let sendLock = NSLock()
    private var waiters: [UInt64: ScannerWaiter] = [:]
    private var lost = false
    private var overran = false

    init(pid: Int32, socket: Int32) {
        self.pid = pid
        self.socket = socket
    }

    deinit {
        // Only here: a request may still hold the connection after the process died, and its descriptor number
        // must not be reused under it.
        close(self.socket)
    }

    var inFlight: Int {
        self.lock.lock()
        defer { self.lock.unlock() }
        return self.waiters.count
    }

    var killedForTimeout: Bool {
        self.lock.lock()
        defer { self.lock.unlock() }
        return self.overran
    }

    /// Registers a request; false when the process is already gone.
    func register(_ id: UInt64, _ waiter: ScannerWaiter) -> Bool {
        self.lock.lock()
        defer { self.lock.unlock() }
        guard !self.lost else { return false }
        self.waiters[id] = waiter
        return true
    }

    func unregister(_ id: UInt64) {
        self.lock.lock()
        self.waiters[id] = nil
        self.lock.unlock()
    }

    /// Sends a message (blocking while the socket's buffer is full). A failed send means the process is dying:
    /// its reader will see the end and fail the waiters.
    func send(_ message: WireWriter, descriptor: Int32 = -1) {
        self.sendLock.lock()
        defer { self.sendLock.unlock() }
        _ = message.bytes.withUnsafeBytes { airlock_send_message(self.socket, $0.baseAddress, $0.count, descriptor) }
    }

    /// Kills the process (a scan overran its time limit, or it failed to start).
    func kill(timedOut: Bool) {
        self.lock.lock()
        if timedOut { self.overran = true }
        self.lock.unlock()
        Glibc.kill(self.pid, SIGKILL)
    }

    /// Shuts the socket: the scanner sees the end and exits, the reader sees it too.
    func closeForShutdown() {
        Glibc.shutdown(self.socket, Int32(SHUT_RDWR))
    }

    /// The first message: the scanner's hello, or why it could not start.
    func awaitHello() throws -> ScannerHello {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: wireMessageLimit, alignment: 16)
        defer { buffer.deallocate() }
        var descriptor: Int32 = -1
        let count = airlock_receive_message(self.socket, buffer.baseAddress, buffer.count, &descriptor)
        if descriptor >= 0 { close(descriptor) }
        guard count > 0, var reader = try? WireReader(UnsafeRawBufferPointer(rebasing: buffer[0..<count])) else {
            throw ScannerStartError("the scanner process exited while starting (\(self.reap())): see its messages above")
        }
        switch reader.kind {
        case .ready:
            guard let json = try? reader.data(), let hello = try? JSONDecoder().decode(ScannerHello.self, from: Data(json)) else {
                throw ScannerStartError("the scanner process sent a malformed greeting")
            }
            return hello
        case .startFailed:
            throw ScannerStartError((try? reader.string()) ?? "the scanner process could not start")
        default:
            throw ScannerStartError("the scanner process sent \(reader.kind) before its greeting")
        }
    }

    /// Routes answers to their waiters until the socket ends.
    func readAnswers() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: wireMessageLimit, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            var descriptor: Int32 = -1
            let count = airlock_receive_message(self.socket, buffer.baseAddress, buffer.count, &descriptor)
            if descriptor >= 0 { close(descriptor) }
            guard count > 0 else { return }
            guard var reader = try? WireReader(UnsafeRawBufferPointer(rebasing: buffer[0..<count])) else { continue }
            self.lock.lock()
            let waiter = self.waiters[reader.id]
            self.lock.unlock()
            guard let waiter else { continue }
            switch reader.kind {
            case .started:
                waiter.markStarted()
            case .report:
                if let report = try? reader.report() {
                    waiter.deliver(.report(report))
                }
            case .abandoned:
                waiter.deliver(.abandoned)
            case .probeResult:
                if let open: Int32 = try? reader.integer(), let connect: Int32 = try? reader.integer(), let exec: Int32 = try? reader.integer() {
                    waiter.deliver(.probe(open, connect, exec))
                }
            default:
                continue
            }
        }
    }

    /// Waits for the process to end; says how it did.
    func reap() -> ScannerExit {
        var status: Int32 = 0
        while waitpid(self.pid, &status, 0) < 0 {
            guard errno == EINTR else { return ScannerExit() }
        }
        // WIFSIGNALED / WTERMSIG / WEXITSTATUS, which Swift does not import.
        let signal = status & 0x7f
        if signal != 0, signal != 0x7f {
            return ScannerExit(signal: signal)
        }
        return ScannerExit(status: (status >> 8) & 0xff)
    }

    /// The process is gone: every waiter is told; returns how many scans were in flight.
    func markLost() -> Int {
        self.lock.lock()
        self.lost = true
        let waiters = Array(self.waiters.values)
        self.lock.unlock()
        for waiter in waiters {
            waiter.deliver(.lost)
        }
        return waiters.count
    }
}
