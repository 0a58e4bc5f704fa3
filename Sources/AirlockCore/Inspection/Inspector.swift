import ClamAV
import Crypto
import Foundation
import LibMagic
public import Logging
import NIOPosix

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
    private let logger: Logger

    private init(signatures: SignatureDatabase, policy: TypePolicy, maxFileSize: Int, magic: MagicPool, threadPool: NIOThreadPool, logger: Logger) {
        self.signatures = signatures
        self.policy = policy
        self.maxFileSize = maxFileSize
        self.magic = magic
        self.threadPool = threadPool
        self.logger = logger
    }

    /// Starts the worker threads and loads the signatures; call ``shutdown()`` when done.
    ///
    /// - Throws: ``SignatureDatabaseError`` or `MagicError` when the engine or libmagic cannot be set up.
    public static func start(configuration: AirlockConfiguration, logger: Logger) async throws -> Inspector {
        let threadPool = NIOThreadPool(numberOfThreads: configuration.scanner.effectiveWorkers)
        threadPool.start()
        do {
            let (signatures, magic) = try await threadPool.runIfActive {
                (try SignatureDatabase.load(configuration.scanner, logger: logger), try MagicPool())
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
                logger: logger
            )
        } catch {
            try? await threadPool.shutdownGracefully()
            throw error
        }
    }

    /// Stops the worker threads once queued inspections finish.
    public func shutdown() async throws {
        try await self.threadPool.shutdownGracefully()
    }

    /// Inspects the file at `path`. Never throws: anything that goes wrong becomes an `unscannable` verdict.
    ///
    /// - Parameter declaredType: the type the sender declared, checked for a mismatch; nil skips that check.
    public func inspect(fileAt path: String, declaredType: String? = nil) async -> InspectionReport {
        do {
            return try await self.threadPool.runIfActive {
                self.inspectBlocking(path: path, declaredType: declaredType)
            }
        } catch {
            return InspectionReport(size: 0, sha256: nil, detectedType: nil, verdict: .unscannable(reason: "scanner unavailable: \(error)"))
        }
    }

    private func inspectBlocking(path: String, declaredType: String?) -> InspectionReport {
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

        // One pass: hash every byte, keep the start for libmagic.
        var hasher = SHA256()
        var head: [UInt8] = []
        let chunkSize = 1 << 20
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 16)
        defer { buffer.deallocate() }
        while true {
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
        let sha256 = hasher.finalize().hexString

        let detected: FileType?
        do {
            detected = try head.withUnsafeBytes { try self.magic.identify($0) }
        } catch {
            self.logger.error("type detection failed", metadata: ["error": "\(error)"])
            detected = nil
        }
        let blockReason = detected.flatMap { self.policy.blockReason(declaredType: declaredType, detectedType: $0.mimeType) }

        let scanVerdict: Verdict
        if size > Int64(self.maxFileSize) {
            scanVerdict = .unscannable(reason: "file is \(size) bytes, over scanner.maxFileSize (\(self.maxFileSize))")
        } else if lseek(descriptor, 0, SEEK_SET) != 0 {
            scanVerdict = .unscannable(reason: "cannot rewind the file: \(String(cString: strerror(errno)))")
        } else {
            scanVerdict = self.scan(descriptor: descriptor, name: path)
        }

        let verdict: Verdict
        switch (scanVerdict, blockReason, detected) {
        case (.infected, _, _):
            verdict = scanVerdict
        case (_, .some(let reason), _):
            verdict = .blocked(reason: reason)
        case (.unscannable, nil, _):
            verdict = scanVerdict
        case (_, nil, nil):
            verdict = .unscannable(reason: "file type could not be detected")
        default:
            verdict = scanVerdict
        }
        return InspectionReport(size: size, sha256: sha256, detectedType: detected, verdict: verdict)
    }

    private func scan(descriptor: Int32, name: String) -> Verdict {
        do {
            switch try self.signatures.engine.scan(fileDescriptor: descriptor, name: name) {
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
