import Foundation
import LibMagic

/// What the loaded signatures are, as the broker needs to know them (the engine itself may live in the scanner
/// process).
public struct SignatureInfo: Sendable, Equatable, Codable {
    /// A version string that changes whenever the loaded signatures change (part of the verdict cache's key).
    public var version: String
    /// The number of signatures loaded.
    public var signatureCount: Int
    /// Whether only Airlock's bundled test signatures were loaded (no real protection).
    public var onlyTestSignatures: Bool
    /// The directories that were loaded.
    public var loadedDirectories: [String]
}

extension SignatureDatabase {
    /// What the broker needs to know about these signatures.
    public var info: SignatureInfo {
        SignatureInfo(
            version: self.version,
            signatureCount: self.signatureCount,
            onlyTestSignatures: self.onlyTestSignatures,
            loadedDirectories: self.loadedDirectories
        )
    }
}

/// Everything the scanner process is told: no secret, no ledger, no store path.
struct ScannerSettings: Codable, Sendable {
    var scanner: AirlockConfiguration.Scanner
    var policy: AirlockConfiguration.Policy
    /// Its private directory for what libclamav extracts.
    var scratchDirectory: String
}

/// What the scanner reports once it is ready.
struct ScannerHello: Codable, Sendable {
    var signatures: SignatureInfo
    /// The uid it runs as.
    var uid: UInt32
    /// The Landlock ABI it enforces (0: the kernel has none).
    var landlockABI: Int32
    /// How libmagic finds types there (`MagicPool.typeDetection`).
    var typeDetection: String?
}

/// The messages between broker and scanner: one SOCK_SEQPACKET datagram each, a kind byte, a request id, then
/// the fields in order (little-endian integers, length-prefixed strings and bytes).
enum WireKind: UInt8 {
    // Broker to scanner.
    case settings = 1
    case scanBytes = 2
    case scanFile = 3
    case scanStream = 4
    case streamAvailable = 5
    case streamAbandon = 6
    case probe = 7
    // Scanner to broker.
    case ready = 101
    case startFailed = 102
    case started = 103
    case report = 104
    case abandoned = 105
    case probeResult = 106
}

/// The largest message: an in-memory body (at most `Broker.inMemoryLimit`) and its fields.
let wireMessageLimit = (64 << 10) + 4096

struct WireWriter {
    private(set) var bytes: [UInt8] = []

    init(_ kind: WireKind, id: UInt64) {
        self.bytes.reserveCapacity(64)
        self.bytes.append(kind.rawValue)
        self.integer(id)
    }

    mutating func integer<Value: FixedWidthInteger>(_ value: Value) {
        withUnsafeBytes(of: value.littleEndian) { self.bytes.append(contentsOf: $0) }
    }

    mutating func bool(_ value: Bool) {
        self.bytes.append(value ? 1 : 0)
    }

    mutating func data(_ value: UnsafeRawBufferPointer) {
        self.integer(UInt32(value.count))
        self.bytes.append(contentsOf: value)
    }

    mutating func string(_ value: String?) {
        guard let value else {
            self.integer(UInt32.max)
            return
        }
        var text = value
        text.withUTF8 { self.data(UnsafeRawBufferPointer($0)) }
    }
}

struct WireReader {
    let kind: WireKind
    let id: UInt64
    private let bytes: UnsafeRawBufferPointer
    private var offset: Int

    struct Malformed: Error {}

    init(_ bytes: UnsafeRawBufferPointer) throws(Malformed) {
        guard bytes.count >= 9, let kind = WireKind(rawValue: bytes[0]) else { throw Malformed() }
        self.kind = kind
        self.bytes = bytes
        var id = UInt64.zero
        withUnsafeMutableBytes(of: &id) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[1..<9])) }
        self.id = UInt64(littleEndian: id)
        self.offset = 9
    }

    mutating func integer<Value: FixedWidthInteger>(_: Value.Type = Value.self) throws(Malformed) -> Value {
        let size = MemoryLayout<Value>.size
        guard self.offset + size <= self.bytes.count else { throw Malformed() }
        var value = Value.zero
        withUnsafeMutableBytes(of: &value) { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: self.bytes[self.offset..<self.offset + size])) }
        self.offset += size
        return Value(littleEndian: value)
    }

    mutating func bool() throws(Malformed) -> Bool {
        try self.integer(UInt8.self) != 0
    }

    /// A view of the next length-prefixed bytes, valid as long as the message's buffer.
    mutating func data() throws(Malformed) -> UnsafeRawBufferPointer {
        let count = Int(try self.integer(UInt32.self))
        guard count <= self.bytes.count - self.offset else { throw Malformed() }
        defer { self.offset += count }
        return UnsafeRawBufferPointer(rebasing: self.bytes[self.offset..<self.offset + count])
    }

    mutating func string() throws(Malformed) -> String? {
        let count = try self.integer(UInt32.self)
        guard count != UInt32.max else { return nil }
        self.offset -= 4
        return String(decoding: try self.data(), as: UTF8.self)
    }
}

extension WireWriter {
    /// A parser report's fields.
    mutating func report(_ report: ParserReport) {
        self.integer(report.size)
        self.integer(UInt8(Verdict.Kind.allCases.firstIndex(of: report.verdict.kind)!))
        self.string(report.verdict.signature ?? report.verdict.reason)
        self.string(report.detectedType?.mimeType)
        self.string(report.detectedType?.description)
    }
}

extension WireReader {
    mutating func report() throws(Malformed) -> ParserReport {
        let size: Int64 = try self.integer()
        let kindIndex = Int(try self.integer(UInt8.self))
        guard kindIndex < Verdict.Kind.allCases.count else { throw Malformed() }
        let text = try self.string() ?? ""
        let mimeType = try self.string()
        let description = try self.string()
        let verdict: Verdict =
            switch Verdict.Kind.allCases[kindIndex] {
            case .clean: .clean
            case .infected: .infected(signature: text)
            case .blocked: .blocked(reason: text)
            case .unscannable: .unscannable(reason: text)
            }
        return ParserReport(size: size, detectedType: mimeType.map { FileType(mimeType: $0, description: description) }, verdict: verdict)
    }
}
