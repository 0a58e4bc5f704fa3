import CAirlockSandbox
import Foundation
public import Logging
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The scanner process (`airlock scanner-process`, started only by the broker): loads the signatures, confines
/// itself, then inspects what the broker sends over descriptor 3 until the broker goes away.
///
/// Confinement, in order: every inherited descriptor but 0-3 closed; death with the parent; resource limits;
/// the engine compiled (with the broker's read access, before anything hostile is parsed); the user switched to
/// `scanner.isolation.user` when started as root; Landlock (read and write only beneath its scratch directory, read
/// the signature directories and system libraries, no TCP); no new privileges and a seccomp filter (no sockets,
/// exec, ptrace, namespaces). Only then is the first upload read.
public enum ScannerService {
    /// The socket the broker hands over.
    static let socket: Int32 = 3

    /// Runs the scanner; returns its exit status.
    ///
    /// - Parameter parent: the broker's pid (the scanner dies with it).
    public static func run(parent: Int32, logger: Logger) -> Int32 {
        airlock_close_descriptors_from(4)
        guard airlock_die_with_parent(parent) == 0 else { return 2 }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: wireMessageLimit, alignment: 16)
        defer { buffer.deallocate() }
        var descriptor: Int32 = -1
        let count = airlock_receive_message(Self.socket, buffer.baseAddress, buffer.count, &descriptor)
        guard count > 0, let reader = try? WireReader(UnsafeRawBufferPointer(rebasing: buffer[0..<count])), reader.kind == .settings
        else {
            logger.error("the scanner process takes its settings from the broker: it is started by airlock serve, not by hand")
            return 2
        }
        var fields = reader
        guard let json = try? fields.data(), let settings = try? JSONDecoder().decode(ScannerSettings.self, from: Data(json)) else {
            return Self.fail("malformed settings from the broker")
        }
        let parsers: Parsers
        let hello: ScannerHello
        do {
            (parsers, hello) = try Self.prepare(settings, logger: logger)
        } catch {
            return Self.fail("\(error)")
        }
        guard let encoded = try? JSONEncoder().encode(hello) else { return 2 }
        var message = WireWriter(.ready, id: 0)
        encoded.withUnsafeBytes { message.data($0) }
        guard Self.send(message, descriptor: -1) else { return 0 }
        Self.serve(parsers, workers: settings.scanner.effectiveWorkers, buffer: buffer, logger: logger)
        return 0
    }

    private static func fail(_ message: String) -> Int32 {
        var writer = WireWriter(.startFailed, id: 0)
        writer.string(message)
        _ = Self.send(writer, descriptor: -1)
        return 2
    }

    /// Limits, engine, user, Landlock, seccomp.
    private static func prepare(_ settings: ScannerSettings, logger: Logger) throws -> (Parsers, ScannerHello) {
        let scratch = open(settings.scratchDirectory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard scratch >= 0, fchdir(scratch) == 0 else {
            throw ScannerStartError("cannot enter the scanner's scratch directory \(settings.scratchDirectory): \(String(cString: strerror(errno)))")
        }
        close(scratch)
        _ = airlock_limit(Int32(RLIMIT_CORE.rawValue), 0)
        if settings.scanner.isolation.memoryLimitBytes > 0 {
            guard airlock_limit(Int32(RLIMIT_AS.rawValue), UInt64(settings.scanner.isolation.memoryLimitBytes)) == 0 else {
                throw ScannerStartError("cannot set scanner.isolation.memoryLimitBytes: \(String(cString: strerror(errno)))")
            }
        }
        // libclamav's per-scan directories go beneath the working directory, which is the scratch directory: no
        // path above it is needed after the user switch.
        let parsers: Parsers
        do {
            parsers = try Parsers(scanner: settings.scanner, policy: TypePolicy(settings.policy), temporaryDirectory: ".", logger: logger)
        } catch {
            throw ScannerStartError("\(error)")
        }
        var uid = getuid()
        if uid == 0 {
            let user = settings.scanner.isolation.user
            guard airlock_switch_user(user, &uid) == 0 else {
                let reason = errno == ENOENT ? "no such user" : String(cString: strerror(errno))
                throw ScannerStartError("cannot switch the scanner to scanner.isolation.user \(user): \(reason); create the user or name another")
            }
        }
        // Descriptors: a few per archive level libclamav opens, the handed-over uploads, the socket.
        _ = airlock_limit(Int32(RLIMIT_NOFILE.rawValue), 256)
        // /etc/magic (and its compiled form): libmagic's local entries, read again by every handle a scan thread
        // makes later; without them those handles would type differently from the first.
        let readable =
            settings.scanner.signatureDirectories + [
                "/usr", "/lib", "/lib64", "/etc/ld.so.cache", "/etc/localtime", "/etc/magic", "/etc/magic.mgc", "/dev/null",
                "/dev/urandom", "/sys/devices/system/cpu",
            ]
        let landlock = withCStringArray(readable) { airlock_landlock(".", $0, Int32(readable.count)) }
        guard landlock >= 0 else { throw ScannerStartError("cannot restrict the scanner with Landlock: \(String(cString: strerror(errno)))") }
        if landlock == 0 {
            logger.warning("this kernel has no Landlock: the scanner's file access is bounded by its user only")
        }
        guard airlock_seccomp() == 0 else {
            throw ScannerStartError("cannot install the scanner's seccomp filter: \(String(cString: strerror(errno)))")
        }
        return (parsers, ScannerHello(signatures: parsers.signatures.info, uid: uid, landlockABI: landlock, typeDetection: parsers.typeDetection))
    }

    private static let sendLock = Mutex(())

    @discardableResult
    static func send(_ message: WireWriter, descriptor: Int32) -> Bool {
        Self.sendLock.withLock { _ in
            message.bytes.withUnsafeBytes { airlock_send_message(Self.socket, $0.baseAddress, $0.count, descriptor) >= 0 }
        }
    }

    /// The request loop: reads messages and hands scans to worker threads; returns when the broker goes away.
    private static func serve(_ parsers: Parsers, workers: Int, buffer: UnsafeMutableRawBufferPointer, logger: Logger) {
        let pool = NIOThreadPool(numberOfThreads: workers)
        pool.start()
        // The lengths of the streamed uploads the broker reports, as the broker's own staging files track them.
        let streams = Mutex<[UInt64: StagingProgress]>([:])
        while true {
            var descriptor: Int32 = -1
            let count = airlock_receive_message(Self.socket, buffer.baseAddress, buffer.count, &descriptor)
            guard count > 0 else { return }
            guard var reader = try? WireReader(UnsafeRawBufferPointer(rebasing: buffer[0..<count])) else {
                if descriptor >= 0 { close(descriptor) }
                continue
            }
            let id = reader.id
            do {
                switch reader.kind {
                case .scanBytes:
                    let declared = try reader.string()
                    let describe = try reader.bool()
                    let bytes = Array(try reader.data())
                    pool.submit { _ in
                        Self.started(id)
                        let report = bytes.withUnsafeBytes { parsers.inspect(bytes: $0, declaredType: declared, describe: describe) }
                        Self.reply(id, report)
                    }
                case .scanFile:
                    let declared = try reader.string()
                    let describe = try reader.bool()
                    let name = try reader.string() ?? "upload"
                    guard descriptor >= 0 else { throw WireReader.Malformed() }
                    let file = descriptor
                    descriptor = -1
                    pool.submit { _ in
                        defer { close(file) }
                        Self.started(id)
                        Self.reply(id, parsers.inspect(descriptor: file, name: name, declaredType: declared, describe: describe))
                    }
                case .scanStream:
                    let declared = try reader.string()
                    let length = Int(try reader.integer(Int64.self))
                    let name = try reader.string() ?? "upload"
                    guard descriptor >= 0, length >= 0 else { throw WireReader.Malformed() }
                    let file = descriptor
                    descriptor = -1
                    let feed = StagingProgress()
                    streams.withLock { $0[id] = feed }
                    // A stream waits on the network: a thread of its own, never a scan worker.
                    Thread.detachNewThread {
                        defer {
                            close(file)
                            streams.withLock { _ = $0.removeValue(forKey: id) }
                        }
                        Self.started(id)
                        let report = parsers.inspect(length: length, name: name, declaredType: declared) { buffer, offset in
                            guard feed.wait(forLength: Int64(offset + buffer.count), stop: { false }) else {
                                errno = ECANCELED
                                return -1
                            }
                            return Parsers.readFully(file, buffer, offset: offset)
                        }
                        if let report {
                            Self.reply(id, report)
                        } else {
                            Self.send(WireWriter(.abandoned, id: id), descriptor: -1)
                        }
                    }
                case .streamAvailable:
                    let available: Int64 = try reader.integer()
                    streams.withLock { $0[id] }?.advance(to: available)
                case .streamAbandon:
                    streams.withLock { $0[id] }?.end(complete: false)
                case .probe:
                    let path = try reader.string() ?? "/"
                    let port = Int32(try reader.integer(UInt16.self))
                    let program = try reader.string() ?? "/bin/true"
                    var opened: Int32 = 0
                    var connected: Int32 = 0
                    var executed: Int32 = 0
                    airlock_probe(path, port, program, &opened, &connected, &executed)
                    var answer = WireWriter(.probeResult, id: id)
                    answer.integer(opened)
                    answer.integer(connected)
                    answer.integer(executed)
                    Self.send(answer, descriptor: -1)
                default:
                    throw WireReader.Malformed()
                }
            } catch {
                logger.error("malformed request from the broker; ignored", metadata: ["kind": "\(reader.kind)"])
            }
            if descriptor >= 0 { close(descriptor) }
        }
    }

    private static func started(_ id: UInt64) {
        Self.send(WireWriter(.started, id: id), descriptor: -1)
    }

    private static func reply(_ id: UInt64, _ report: ParserReport) {
        var message = WireWriter(.report, id: id)
        message.report(report)
        Self.send(message, descriptor: -1)
    }
}

/// Why the scanner could not start; the broker shows the message.
struct ScannerStartError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) {
        self.description = description
    }
}
