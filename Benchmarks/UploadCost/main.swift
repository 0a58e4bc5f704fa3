import AirlockCore
import ClamAV
import Crypto
import Foundation
import LibMagic
import Logging
import NIOCore
import Synchronization

// What one small upload costs the broker, stage by stage, without HTTP: CPU time per 8 KiB file for SHA-256,
// libmagic, libclamav (from memory, as the broker scans small uploads), the whole inspection, and the whole
// hand-off (inspection, store, ledger) through `Broker.receive(_:contents:)`; then the hand-off with one task per
// connection, as the HTTP server drives it. Every body is distinct, so nothing comes from the verdict cache.
// The sum of the stages bounds the upload rate a machine can reach with all its cores, whatever the HTTP server.
//
//   swift run -c release airlock-cost-benchmark [FILES_PER_STAGE] [CONNECTIONS]        (defaults 1000 and 32)
//   swift run -c release airlock-cost-benchmark floor [FILES]                             (default 400)
//
// `floor` measures only the inspection floor (SHA-256 + libmagic + libclamav from memory), in a few seconds, and
// prints one line per kind, `FLOOR <kind> <files/s, all cores at once> <files/s, one thread's cost × cores> <files/s,
// all cores at once, typing as the broker does>`: Benchmarks/small-uploads.sh takes it just before
// and just after each Airlock run, because this machine's speed drifts by up to 1.5× within minutes and a floor
// measured at another time skews the ratio.
//
// Signatures: Config/signatures (run it from the repository). Data: a fresh directory under $BENCH_TMPDIR
// (default /dev/shm, the tmpfs the small-uploads benchmark uses), removed at the end. BENCH_BODIES picks the kinds
// of body (default "image random text").

var arguments = CommandLine.arguments.dropFirst()
let floorOnly = arguments.first == "floor"
if floorOnly { arguments = arguments.dropFirst() }
let files = arguments.first.flatMap(Int.init) ?? (floorOnly ? 400 : 1000)
let connections = arguments.dropFirst().first.flatMap(Int.init) ?? 32
let cores = ProcessInfo.processInfo.activeProcessorCount
let kinds = (ProcessInfo.processInfo.environment["BENCH_BODIES"] ?? "image random text").split(separator: " ").map(String.init)
let size = 8192

/// A distinct 8 KiB body of `kind`, shaped as the small-uploads benchmark's bodies: the JPEG's JFIF header (for
/// "image"), then a tag naming the stage and index, then random bytes (or, for "text", letters, digits, spaces and
/// newlines).
func body(_ kind: String, stage: String, index: Int, random: inout SplitMix64) -> [UInt8] {
    let jfif: [UInt8] = [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 0x4A, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00]
    var bytes = kind == "image" ? jfif : []
    bytes += Array("upload \(stage) \(index) ".utf8)
    if kind == "text" {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \n".utf8)
        while bytes.count < size { bytes.append(alphabet[Int.random(in: 0..<alphabet.count, using: &random)]) }
    } else {
        while bytes.count < size { bytes.append(UInt8.random(in: 0...255, using: &random)) }
    }
    return bytes
}

/// A fast seeded generator for the bodies (the system one makes a system call per byte drawn).
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// CPU time of the whole process (every thread) and of its running child processes (the broker's confined scanner
/// processes, where libmagic and libclamav run), in microseconds.
func cpuMicroseconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    let user = Double(usage.ru_utime.tv_sec) * 1e6 + Double(usage.ru_utime.tv_usec)
    let system = Double(usage.ru_stime.tv_sec) * 1e6 + Double(usage.ru_stime.tv_usec)
    return user + system + childrenCPUMicroseconds()
}

/// The CPU time of this process's running children, from /proc/PID/stat (utime and stime, fields 14 and 15).
func childrenCPUMicroseconds() -> Double {
    let me = getpid()
    let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
    var total = 0.0
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where Int32(entry) != nil {
        guard let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
            let end = stat.lastIndex(of: ")")
        else { continue }
        // After "pid (comm)": state, ppid, … utime is the 14th field of the line, the 12th after the name.
        let fields = stat[stat.index(after: end)...].split(separator: " ")
        guard fields.count > 12, Int32(fields[1]) == me, let user = Double(fields[11]), let system = Double(fields[12]) else { continue }
        total += (user + system) / ticks * 1e6
    }
    return total
}

/// Runs `work` once per body; returns CPU microseconds per body.
func measure(_ bodies: [[UInt8]], _ work: (UnsafeRawBufferPointer) throws -> Void) rethrows -> Double {
    let started = cpuMicroseconds()
    for bytes in bodies {
        try bytes.withUnsafeBytes { try work($0) }
    }
    return (cpuMicroseconds() - started) / Double(bodies.count)
}

func format(_ value: Double) -> String { String(format: value >= 100 ? "%.0f" : "%.1f", value) }

let root = (ProcessInfo.processInfo.environment["BENCH_TMPDIR"] ?? "/dev/shm") + "/airlock-cost.\(getpid())"
defer { try? FileManager.default.removeItem(atPath: root) }

/// SHA-256 + libmagic + libclamav from memory, CPU µs per body of `kind`, each stage on its own bodies.
func floorCost(_ kind: String, magic: MagicPool, engine: ClamAVEngine, random: inout SplitMix64) throws -> Double {
    func bodies(_ stage: String) -> [[UInt8]] { (0..<files).map { body(kind, stage: stage, index: $0, random: &random) } }
    let hash = measure(bodies("hash")) { _ = SHA256.hash(data: $0) }
    let type = try measure(bodies("type")) { _ = try magic.identify($0, describe: false) }
    let scan = try measure(bodies("scan")) { _ = try engine.scan(bytes: $0) }
    return hash + type + scan
}

/// The floor as DESIGN §7 words it, "all cores": one thread per core, each hashing, typing and scanning its own
/// bodies one after another (as scan workers do), all at once; files per second of wall-clock time. Lower than the
/// extrapolation from one thread (``floorCost``) by what the cores share: caches, memory, the host.
func concurrentFloor(_ kind: String, magic: MagicPool, engine: ClamAVEngine, random: inout SplitMix64) async throws -> Double {
    let sets: [[[UInt8]]] = (0..<cores).map { thread in (0..<files).map { body(kind, stage: "all\(thread)", index: $0, random: &random) } }
    // Untimed first: each thread's libmagic handle is loaded (the pool makes one per concurrent caller).
    _ = try await inspectConcurrently(sets.map { Array($0.prefix(16)) }, magic: magic, engine: engine)
    return Double(cores * files) / (try await inspectConcurrently(sets, magic: magic, engine: engine))
}

/// Seconds of wall-clock time to inspect `sets`, one thread per set, all at once.
func inspectConcurrently(_ sets: [[[UInt8]]], magic: MagicPool, engine: ClamAVEngine) async throws -> Double {
    // Blocking work, on threads of its own (never the cooperative pool's).
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            let failures = Mutex<[any Error]>([])
            let started = DispatchTime.now().uptimeNanoseconds
            DispatchQueue.concurrentPerform(iterations: sets.count) { thread in
                for bytes in sets[thread] {
                    do {
                        try bytes.withUnsafeBytes { buffer in
                            _ = SHA256.hash(data: buffer)
                            _ = try magic.identify(buffer, describe: false)
                            _ = try engine.scan(bytes: buffer)
                        }
                    } catch {
                        failures.withLock { $0.append(error) }
                    }
                }
            }
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
            if let failure = failures.withLock({ $0.first }) {
                continuation.resume(throwing: failure)
            } else {
                continuation.resume(returning: elapsed)
            }
        }
    }
}

if floorOnly {
    let scanning = root + "/scanning-alone"
    try FileManager.default.createDirectory(atPath: scanning, withIntermediateDirectories: true)
    // DESIGN §7's floor types with libmagic as `file --mime-type` does (the whole database); the broker's own
    // inspection first tries the entries that can print a MIME type (MagicPool.TypeDetection), measured beside it.
    let magic = try MagicPool(detection: .wholeDatabase)
    let brokerMagic = try MagicPool()
    let engine = try ClamAVEngine(databasePaths: ["Config/signatures"], limits: ScanLimits(), temporaryDirectory: scanning)
    var random = SplitMix64(seed: UInt64(getpid()))
    for kind in kinds {
        // All cores at once (DESIGN §7's floor), then one thread's cost times the cores, then all cores at once
        // typing as the broker does.
        let together = try await concurrentFloor(kind, magic: magic, engine: engine, random: &random)
        let cost = try floorCost(kind, magic: magic, engine: engine, random: &random)
        let asBroker = try await concurrentFloor(kind, magic: brokerMagic, engine: engine, random: &random)
        print(
            "FLOOR \(kind) \(String(format: "%.0f", together)) \(String(format: "%.0f", Double(cores) * 1e6 / cost)) \(String(format: "%.0f", asBroker))"
        )
    }
    try? FileManager.default.removeItem(atPath: root)
    exit(0)
}

var configuration = AirlockConfiguration.development
configuration.storage.dataDirectory = root + "/var"
configuration.storage.quarantineDirectory = root + "/Quarantine"
// Absolute: the confined scanner process (issue 17) does not run in this directory.
configuration.scanner.signatureDirectories = [FileManager.default.currentDirectoryPath + "/Config/signatures"]
var logger = Logger(label: "airlock-cost-benchmark")
logger.logLevel = .error
let broker = try await Broker.start(configuration: configuration, logger: logger)
// The libmagic column: as DESIGN §7's floor types (the whole database); the inspection and hand-off columns go
// through the broker, so they type as it does (its first pass on the entries that can print a MIME type), in its
// scanner process, whose CPU they count.
let magic = try MagicPool(detection: .wholeDatabase)
let scanning = root + "/scanning-alone"
try FileManager.default.createDirectory(atPath: scanning, withIntermediateDirectories: true)
let engine = try ClamAVEngine(databasePaths: ["Config/signatures"], limits: ScanLimits(), temporaryDirectory: scanning)
var random = SplitMix64(seed: 11)

print("machine: \(cores) cores; \(files) distinct 8 KiB bodies per kind and stage; data on \(root); signatures Config/signatures")
print("")
print("CPU time per upload, in µs, one at a time (the hand-off counts every thread it uses):")
print("")
print(
    "| body | SHA-256 | libmagic | libclamav | inspection (hash, type, scan, policy) | hand-off without HTTP (hash, inspect, store, ledger) | \(connections) concurrent hand-offs: uploads/s | µs of CPU each |"
)
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
var ceilings: [(String, Double, Double)] = []
// A body the broker did not store clean would be timed on another path: the hand-offs are counted, not trusted.
var notStored: [String] = []
for kind in kinds {
    func bodies(_ stage: String) -> [[UInt8]] { (0..<files).map { body(kind, stage: stage, index: $0, random: &random) } }
    let declared = kind == "image" ? "image/jpeg" : kind == "text" ? "text/plain" : "application/octet-stream"
    let hash = measure(bodies("hash")) { _ = SHA256.hash(data: $0) }
    let type = try measure(bodies("type")) { _ = try magic.identify($0, describe: false) }
    let scan = try measure(bodies("scan")) { _ = try engine.scan(bytes: $0) }
    let inspection = measure(bodies("inspect")) { bytes in
        let report = broker.inspector.inspectSynchronously(bytes: bytes, declaredType: declared, sha256: SHA256.hash(data: bytes).hexString)
        precondition(report.sha256 != nil, "inspection failed: \(report)")
    }
    @Sendable func handOff(_ index: Int) -> HandOff {
        HandOff(
            server: "dev",
            sender: "alice@example.org",
            recipients: ["bob@example.org"],
            filename: "\(kind)-\(index)",
            declaredType: declared
        )
    }
    /// Hands one body off; returns what went wrong when the broker did not store it clean.
    @Sendable func handOffOnce(_ index: Int, _ contents: ByteBuffer) async throws -> String? {
        let record = try await broker.handOff(handOff(index), body: .inMemory(contents)).transfer
        return record.state == .stored ? nil : "\(kind) \(record.id): \(record.state)"
    }
    let sequential = bodies("hand-off").map { ByteBuffer(bytes: $0) }
    var started = cpuMicroseconds()
    for (index, contents) in sequential.enumerated() {
        if let problem = try await handOffOnce(index, contents) { notStored.append(problem) }
    }
    let handOffCost = (cpuMicroseconds() - started) / Double(files)
    let concurrent = bodies("concurrent").map { ByteBuffer(bytes: $0) }
    started = cpuMicroseconds()
    let clock = ContinuousClock.now
    notStored += try await withThrowingTaskGroup(of: [String].self) { group in
        for connection in 0..<connections {
            group.addTask {
                var notStored: [String] = []
                for index in stride(from: connection, to: concurrent.count, by: connections) {
                    if let problem = try await handOffOnce(files + index, concurrent[index]) { notStored.append(problem) }
                }
                return notStored
            }
        }
        var all: [String] = []
        for try await some in group { all += some }
        return all
    }
    let elapsed = ContinuousClock.now - clock
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    let concurrentCost = (cpuMicroseconds() - started) / Double(files)
    let rate = Double(files) / seconds
    print(
        "| \(kind) | \(format(hash)) | \(format(type)) | \(format(scan)) | \(format(inspection)) | \(format(handOffCost)) | \(String(format: "%.0f", rate)) | \(format(concurrentCost)) |"
    )
    ceilings.append((kind, hash + type + scan, handOffCost))
}
print("")
print("The most uploads per second \(cores) cores allow, from these costs alone (no HTTP, no client):")
print("")
print("| body | SHA-256 + libmagic + libclamav | the hand-off without HTTP |")
print("| --- | --- | --- |")
for (kind, floor, handOffCost) in ceilings {
    print("| \(kind) | \(String(format: "%.0f", Double(cores) * 1e6 / floor)) | \(String(format: "%.0f", Double(cores) * 1e6 / handOffCost)) |")
}
if !notStored.isEmpty {
    print("")
    print("warning: \(notStored.count) bodies were not stored clean, so their hand-offs took another path: \(notStored.prefix(5))")
}
try await broker.shutdown()
