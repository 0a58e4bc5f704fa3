public import ClamAV
import Crypto
import Foundation
public import Logging

/// The compiled libclamav engine built from `scanner.signatureDirectories`, and what went into it.
public struct SignatureDatabase: Sendable {
    /// The shared, compiled engine.
    public let engine: ClamAVEngine
    /// The directories that were loaded, in configuration order.
    public let loadedDirectories: [String]
    /// The number of signatures loaded.
    public var signatureCount: Int { self.engine.signatureCount }
    /// Whether only Airlock's bundled test signatures were loaded (no real protection).
    public let onlyTestSignatures: Bool
    /// A version string that changes whenever the loaded signatures change: libclamav's database version plus
    /// a digest of the loaded files' names, sizes and modification times.
    public let version: String

    /// The file name prefix of Airlock's bundled test signature files.
    public static let testSignaturePrefix = "airlock-test."

    /// Loads every configured directory that exists and holds signatures, then compiles the engine.
    ///
    /// Blocking: call it off the cooperative pool.
    /// - Throws: ``SignatureDatabaseError`` when no directory holds signatures or one fails to load.
    public static func load(_ scanner: AirlockConfiguration.Scanner, temporaryDirectory: String? = nil, logger: Logger) throws -> SignatureDatabase {
        var loaded: [String] = []
        var files: [(path: String, size: Int, modified: Double)] = []
        for directory in scanner.signatureDirectories {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
                logger.warning("signature directory does not exist; skipped", metadata: ["directory": "\(directory)"])
                continue
            }
            let names: [String]
            do {
                names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { !$0.hasPrefix(".") }.sorted()
            } catch {
                throw SignatureDatabaseError.unreadable(directory: directory, reason: "\(error.localizedDescription)")
            }
            let entries = names.compactMap { name -> (String, Int, Double)? in
                let path = (directory as NSString).appendingPathComponent(name)
                guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
                    attributes[.type] as? FileAttributeType == .typeRegular
                else { return nil }
                let size = (attributes[.size] as? NSNumber)?.intValue ?? 0
                let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
                return (path, size, modified)
            }
            guard !entries.isEmpty else {
                logger.warning("signature directory holds no signature files; skipped", metadata: ["directory": "\(directory)"])
                continue
            }
            loaded.append(directory)
            files += entries.map { (path: $0.0, size: $0.1, modified: $0.2) }
        }
        guard !loaded.isEmpty else {
            throw SignatureDatabaseError.noSignatures(directories: scanner.signatureDirectories)
        }

        let limits = ScanLimits(
            maxFileSize: scanner.maxFileSize,
            maxScanSize: scanner.maxScanSize,
            maxRecursion: scanner.maxRecursion,
            maxFiles: scanner.maxFiles,
            maxScanTime: .seconds(scanner.scanTimeoutSeconds)
        )
        let engine: ClamAVEngine
        do {
            engine = try ClamAVEngine(databasePaths: loaded, limits: limits, temporaryDirectory: temporaryDirectory)
        } catch {
            throw SignatureDatabaseError.loadFailed(error)
        }
        guard engine.signatureCount > 0 else {
            throw SignatureDatabaseError.noSignatures(directories: scanner.signatureDirectories)
        }

        // A signature update between listing and loading would pair these files' fingerprint with other content.
        let reloaded = files.map { file in
            let attributes = try? FileManager.default.attributesOfItem(atPath: file.path)
            return (attributes?[.size] as? NSNumber)?.intValue == file.size
                && ((attributes?[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0) == file.modified
        }
        guard reloaded.allSatisfy({ $0 }) else {
            throw SignatureDatabaseError.changedWhileLoading
        }

        let onlyTest = files.allSatisfy { ($0.path as NSString).lastPathComponent.hasPrefix(Self.testSignaturePrefix) }
        // Everything that can change a verdict: the files, libclamav's version and the limits.
        var fingerprint = SHA256()
        fingerprint.update(data: Data("\(ClamAVLibrary.version)|\(limits)|".utf8))
        for file in files {
            fingerprint.update(data: Data("\(file.path)\u{0}\(file.size)\u{0}\(file.modified)\u{0}".utf8))
        }
        let version = "\(engine.databaseVersion)-\(fingerprint.finalize().hexString.prefix(16))"
        return SignatureDatabase(engine: engine, loadedDirectories: loaded, onlyTestSignatures: onlyTest, version: version)
    }
}

/// Why the signature database could not be loaded; each message says what to do.
public enum SignatureDatabaseError: Error, CustomStringConvertible {
    /// No configured directory exists and holds signatures.
    case noSignatures(directories: [String])
    /// A directory cannot be listed.
    case unreadable(directory: String, reason: String)
    /// libclamav refused a database.
    case loadFailed(ClamAVError)
    /// A signature file changed while it was loaded (an update in progress).
    case changedWhileLoading

    public var description: String {
        switch self {
        case .noSignatures(let directories):
            "no signatures loaded: none of scanner.signatureDirectories (\(directories.joined(separator: ", "))) exists and holds "
                + "signature files. Point scanner.signatureDirectories at Config/signatures (bundled test signatures) or at a "
                + "freshclam database such as /var/lib/clamav"
        case .unreadable(let directory, let reason):
            "cannot read signature directory \(directory): \(reason)"
        case .changedWhileLoading:
            "the signature files changed while they were loaded (an update in progress?); start again"
        case .loadFailed(let error):
            if let culprit = error.culprit {
                "cannot load signatures: \(culprit) is corrupt or not a signature file (\(error.message)); fix or remove it"
            } else {
                "cannot load signatures: \(error)"
            }
        }
    }
}
