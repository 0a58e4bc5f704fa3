import ClamAV
import Foundation
public import LibMagic
public import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// What libclamav and libmagic made of one file, with the type policy applied; the content's digest is the
/// broker's business and not here.
public struct ParserReport: Sendable, Equatable {
    /// The bytes inspected.
    public var size: Int64
    /// The type libmagic detected; nil when detection failed.
    public var detectedType: FileType?
    /// The verdict.
    public var verdict: Verdict
    /// Whether the scanner process died (twice) or overran its time limit while parsing this content: such a
    /// verdict is remembered for the content's digest, so the same bytes cannot crash the scanner again and again.
    public var scannerFailure: Bool
    /// The version of the signatures that scanned it (set by the side that knows the engine); nil when no engine
    /// answered.
    public var signatureVersion: String?

    /// Creates a report.
    public init(size: Int64, detectedType: FileType?, verdict: Verdict, scannerFailure: Bool = false, signatureVersion: String? = nil) {
        self.size = size
        self.detectedType = detectedType
        self.verdict = verdict
        self.scannerFailure = scannerFailure
        self.signatureVersion = signatureVersion
    }
}

/// The code that parses hostile bytes: libclamav's engine, libmagic's handles, and the type policy that judges
/// what they found. With `scanner.isolation.enabled` it runs only in the confined scanner process
/// (``ScannerService``); without, in the broker. Every method blocks: call them on threads of their own.
public final class Parsers: Sendable {
    /// The loaded signatures.
    public let signatures: SignatureDatabase
    private let policy: TypePolicy
    private let maxFileSize: Int
    private let magic: MagicPool
    private let logger: Logger

    /// How libmagic finds types here, for the start-up log (`MagicPool.typeDetection`).
    public var typeDetection: String {
        self.magic.typeDetection
    }

    /// Loads the signatures and one libmagic handle.
    ///
    /// - Parameter temporaryDirectory: where libclamav extracts what it scans inside files; nil for its default.
    /// - Throws: ``SignatureDatabaseError`` or `MagicError`.
    public init(scanner: AirlockConfiguration.Scanner, policy: TypePolicy, temporaryDirectory: String?, logger: Logger) throws {
        self.signatures = try SignatureDatabase.load(scanner, temporaryDirectory: temporaryDirectory, logger: logger)
        self.magic = try MagicPool()
        self.policy = policy
        self.maxFileSize = scanner.maxFileSize
        self.logger = logger
        logger.info("libmagic type detection", metadata: ["typeDetection": "\(self.magic.typeDetection)"])
    }

    /// Inspects bytes held in memory.
    public func inspect(bytes: UnsafeRawBufferPointer, declaredType: String?, describe: Bool) -> ParserReport {
        let head = UnsafeRawBufferPointer(rebasing: bytes.prefix(MagicPool.sniffLength))
        let detected = self.identify(head)
        let scanVerdict: Verdict
        if bytes.count > self.maxFileSize {
            scanVerdict = self.overLimit(Int64(bytes.count))
        } else {
            scanVerdict = self.scan(name: "upload") { (engine) throws(ClamAVError) in try engine.scan(bytes: bytes, name: nil) }
        }
        let verdict = self.decide(scanVerdict, detected, declaredType)
        return ParserReport(
            size: Int64(bytes.count),
            detectedType: self.described(detected, head: head, verdict: verdict, always: describe),
            verdict: verdict
        )
    }

    /// Inspects an open regular file from its start (the descriptor's offset is moved).
    public func inspect(descriptor: Int32, name: String, declaredType: String?, describe: Bool) -> ParserReport {
        let size = lseek(descriptor, 0, SEEK_END)
        guard size >= 0 else {
            return ParserReport(
                size: 0,
                detectedType: nil,
                verdict: .unscannable(reason: "cannot read the file: \(String(cString: strerror(errno)))")
            )
        }
        var head = [UInt8](repeating: 0, count: min(MagicPool.sniffLength, Int(size)))
        let count = head.withUnsafeMutableBytes { Self.readFully(descriptor, $0, offset: 0) }
        guard count == head.count else {
            return ParserReport(
                size: Int64(size),
                detectedType: nil,
                verdict: .unscannable(reason: "cannot read the file: it changed while it was read")
            )
        }
        let detected = self.identify(head)
        let scanVerdict: Verdict
        if Int64(size) > Int64(self.maxFileSize) {
            scanVerdict = self.overLimit(Int64(size))
        } else if lseek(descriptor, 0, SEEK_SET) != 0 {
            scanVerdict = .unscannable(reason: "cannot rewind the file: \(String(cString: strerror(errno)))")
        } else {
            scanVerdict = self.scan(name: name) { (engine) throws(ClamAVError) in try engine.scan(fileDescriptor: descriptor, name: name) }
        }
        let verdict = self.decide(scanVerdict, detected, declaredType)
        return ParserReport(
            size: Int64(size),
            detectedType: head.withUnsafeBytes { self.described(detected, head: $0, verdict: verdict, always: describe) },
            verdict: verdict
        )
    }

    /// Inspects `length` bytes delivered by `read(buffer, offset)` (which may wait for them, and returns -1 to give
    /// up): an upload still being received. Nil when a read gave up, so the result means nothing.
    public func inspect(length: Int, name: String, declaredType: String?, read: @escaping (UnsafeMutableRawBufferPointer, Int) -> Int)
        -> ParserReport?
    {
        var failed = false
        let reader: (UnsafeMutableRawBufferPointer, Int) -> Int = { buffer, offset in
            let count = read(buffer, offset)
            if count < 0 { failed = true }
            return count
        }
        var head = [UInt8](repeating: 0, count: min(MagicPool.sniffLength, length))
        guard head.withUnsafeMutableBytes({ reader($0, 0) }) == head.count else { return nil }
        let detected = self.identify(head)
        let scanVerdict: Verdict
        if length > self.maxFileSize {
            scanVerdict = self.overLimit(Int64(length))
        } else {
            scanVerdict = self.scan(name: name) { (engine) throws(ClamAVError) in try engine.scan(length: length, name: name, read: reader) }
        }
        guard !failed else { return nil }
        let verdict = self.decide(scanVerdict, detected, declaredType)
        return ParserReport(
            size: Int64(length),
            detectedType: head.withUnsafeBytes { self.described(detected, head: $0, verdict: verdict, always: false) },
            verdict: verdict
        )
    }

    /// Reads `buffer.count` bytes at `offset` (fewer only at the end of the file); -1 on an error.
    static func readFully(_ descriptor: Int32, _ buffer: UnsafeMutableRawBufferPointer, offset: Int) -> Int {
        var done = 0
        while done < buffer.count {
            let count = pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
            if count < 0, errno == EINTR { continue }
            if count < 0 { return -1 }
            if count == 0 { break }
            done += count
        }
        return done
    }

    private func overLimit(_ size: Int64) -> Verdict {
        .unscannable(reason: "file is \(size) bytes, over scanner.maxFileSize (\(self.maxFileSize))")
    }

    private func identify(_ head: [UInt8]) -> FileType? {
        head.withUnsafeBytes { self.identify($0) }
    }

    /// libmagic's type for the start of a file; nil when detection fails.
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
}
