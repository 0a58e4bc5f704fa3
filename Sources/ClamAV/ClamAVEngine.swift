internal import CClamAV
import Foundation

/// A compiled libclamav engine: signatures loaded, limits applied, then shared read-only by concurrent scans.
///
/// Scans block the calling thread; run them off Swift's cooperative pool.
public final class ClamAVEngine: @unchecked Sendable {
    // Invariant that makes this Sendable: `engine` is configured, loaded and compiled inside `init`, before any
    // other thread can see it, and afterwards only scanned with, which libclamav supports concurrently (clamd
    // does the same). No setter is exposed, so nothing reconfigures it while in use.
    private let engine: OpaquePointer

    /// The limits applied to every scan.
    public let limits: ScanLimits
    /// The number of signatures loaded, as `cl_load` counts them.
    public let signatureCount: Int
    /// The signature database version libclamav reports (the official `daily` version; 0 for unofficial databases).
    public let databaseVersion: Int

    /// Loads every given database path (file or directory), applies the limits and compiles the engine.
    ///
    /// - Parameter temporaryDirectory: where libclamav creates the directory each scan needs for what it extracts
    ///   (and removes afterwards); nil keeps libclamav's default, `$TMPDIR` or `/tmp`.
    /// - Throws: ``ClamAVError`` when libclamav cannot initialise, a database does not load (naming the faulty
    ///   file when it can be found) or the engine does not compile.
    public init(databasePaths: [String], limits: ScanLimits, temporaryDirectory: String? = nil) throws(ClamAVError) {
        try ClamAVLibrary.initialize()
        guard let engine = cl_engine_new() else {
            throw ClamAVError(operation: "cl_engine_new", code: CL_EMEM)
        }
        do throws(ClamAVError) {
            if let temporaryDirectory {
                let code = cl_engine_set_str(engine, CL_ENGINE_TMPDIR, temporaryDirectory)
                guard code == CL_SUCCESS else {
                    throw ClamAVError(operation: "cl_engine_set_str(TmpDir, \(temporaryDirectory))", code: code)
                }
            }
            let (count, version) = try Self.prepare(engine, databasePaths: databasePaths, limits: limits)
            self.signatureCount = count
            self.databaseVersion = version
        } catch {
            cl_engine_free(engine)
            throw error
        }
        self.engine = engine
        self.limits = limits
    }

    /// Applies limits and callbacks, loads the databases and compiles; returns the signature count and version.
    private static func prepare(
        _ engine: OpaquePointer,
        databasePaths: [String],
        limits: ScanLimits
    ) throws(ClamAVError) -> (Int, Int) {
        // Limits and callbacks go in before cl_engine_compile, never after.
        func set(_ field: cl_engine_field, _ value: Int64, _ name: String) throws(ClamAVError) {
            try check(cl_engine_set_num(engine, field, value), "cl_engine_set_num(\(name))")
        }
        try set(CL_ENGINE_MAX_FILESIZE, Int64(limits.maxFileSize), "MaxFileSize")
        try set(CL_ENGINE_MAX_SCANSIZE, Int64(limits.maxScanSize), "MaxScanSize")
        try set(CL_ENGINE_MAX_RECURSION, Int64(limits.maxRecursion), "MaxRecursion")
        try set(CL_ENGINE_MAX_FILES, Int64(limits.maxFiles), "MaxFiles")
        try set(CL_ENGINE_MAX_SCANTIME, limits.maxScanTimeMilliseconds, "MaxScanTime")
        // libclamav's own clean cache hashes every file whole before scanning it, so a scan could not start
        // until an upload's last byte had arrived. Airlock caches verdicts itself, by SHA-256 and signature version.
        try set(CL_ENGINE_DISABLE_CACHE, 1, "DisableCache")
        cl_engine_set_clcb_virus_found(engine) { _, virname, context in
            guard let context, let virname else { return }
            ScanSession.from(context).signatures.append(String(cString: virname))
        }
        cl_engine_set_clcb_meta(engine) { _, _, filename, realSize, isEncrypted, _, context in
            guard let context else { return CL_CLEAN }
            let member = filename.map { String(cString: $0) } ?? "(unnamed)"
            let session = ScanSession.from(context)
            return session.inspectMember(named: member, size: UInt64(realSize), encrypted: isEncrypted != 0) ? CL_CLEAN : CL_VIRUS
        }

        // Archive headers can understate a member's size, and libclamav then trims the extracted member at
        // MaxFileSize without any alert. The real size of every extracted layer is checked here instead, from the
        // descriptor of the temporary file libclamav extracted it to. (The file-inspection callback would hand us
        // the size too, but registering it makes libclamav read every layer whole into memory: 1 GiB of RSS for a
        // 1 GiB upload.)
        cl_engine_set_clcb_pre_scan(engine) { descriptor, _, context in
            guard let context, descriptor >= 0 else { return CL_CLEAN }
            let session = ScanSession.from(context)
            guard descriptor != session.topLevelDescriptor else { return CL_CLEAN }
            let size = ccl_descriptor_size(descriptor)
            guard size >= 0 else { return CL_CLEAN }
            return session.inspectExtractedLayer(size: UInt64(size)) ? CL_CLEAN : CL_VIRUS
        }

        var total: UInt32 = 0
        for path in databasePaths {
            var loaded: UInt32 = 0
            let result = cl_load(path, engine, &loaded, CCLAMAV_DB_STDOPT)
            guard result == CL_SUCCESS else {
                throw ClamAVError(operation: "cl_load(\(path))", code: result, culprit: Self.findFaultyDatabase(in: path))
            }
            total += loaded
        }
        try check(cl_engine_compile(engine), "cl_engine_compile")
        return (Int(total), Int(cl_engine_get_num(engine, CL_ENGINE_DB_VERSION, nil)))
    }

    deinit {
        cl_engine_free(self.engine)
    }

    /// Scans an open file from its current start, blocking the calling thread.
    ///
    /// - Parameters:
    ///   - fileDescriptor: a readable descriptor of a regular file; it is not closed.
    ///   - name: a name for libclamav's logs and archive callbacks.
    public func scan(fileDescriptor: Int32, name: String? = nil) throws(ClamAVError) -> ScanResult {
        try self.withSession(operation: "cl_scandesc_callback", topLevelDescriptor: fileDescriptor) { virname, scanned, options, context in
            cl_scandesc_callback(fileDescriptor, name, &virname, &scanned, self.engine, &options, context)
        }
    }

    /// Scans bytes in memory (through `cl_fmap_open_memory`), blocking the calling thread.
    ///
    /// Scanning from memory scales better across threads than scanning by descriptor.
    public func scan(bytes: UnsafeRawBufferPointer, name: String? = nil) throws(ClamAVError) -> ScanResult {
        guard let base = bytes.baseAddress, bytes.count > 0 else {
            // An empty input holds nothing to match; libclamav refuses to map zero bytes.
            return .clean
        }
        guard let map = cl_fmap_open_memory(base, bytes.count) else {
            throw ClamAVError(operation: "cl_fmap_open_memory", code: CL_EMEM)
        }
        defer { cl_fmap_close(map) }
        return try self.withSession(operation: "cl_scanmap_callback", topLevelDescriptor: nil) { virname, scanned, options, context in
            cl_scanmap_callback(map, name, &virname, &scanned, self.engine, &options, context)
        }
    }

    /// Scans `length` bytes that `read` supplies on demand (through `cl_fmap_open_handle`), blocking the calling
    /// thread.
    ///
    /// `read(buffer, offset)` must fill all of `buffer` with the bytes at `offset` and return `buffer.count`, or
    /// return -1 to make the scan fail. It may block until the bytes exist: this lets a file be scanned while it
    /// is still being received.
    public func scan(length: Int, name: String? = nil, read: @escaping (UnsafeMutableRawBufferPointer, Int) -> Int) throws(ClamAVError) -> ScanResult
    {
        guard length > 0 else { return .clean }
        let reader = Unmanaged.passRetained(ScanReader(read))
        defer { reader.release() }
        let map = cl_fmap_open_handle(
            reader.toOpaque(),
            0,
            length,
            { handle, buffer, count, offset in
                guard let handle, let buffer else { return -1 }
                let reader = Unmanaged<ScanReader>.fromOpaque(handle).takeUnretainedValue()
                return off_t(reader.read(UnsafeMutableRawBufferPointer(start: buffer, count: count), Int(offset)))
            },
            1
        )
        guard let map else {
            throw ClamAVError(operation: "cl_fmap_open_handle", code: CL_EMEM)
        }
        defer { cl_fmap_close(map) }
        return try self.withSession(operation: "cl_scanmap_callback", topLevelDescriptor: nil) { virname, scanned, options, context in
            cl_scanmap_callback(map, name, &virname, &scanned, self.engine, &options, context)
        }
    }

    private func withSession(
        operation: String,
        topLevelDescriptor: Int32?,
        _ body: (inout UnsafePointer<CChar>?, inout UInt, inout cl_scan_options, UnsafeMutableRawPointer) -> cl_error_t
    ) throws(ClamAVError) -> ScanResult {
        let session = ScanSession(limits: self.limits, topLevelDescriptor: topLevelDescriptor)
        var options = Self.scanOptions
        var virname: UnsafePointer<CChar>? = nil
        var scanned: UInt = 0
        let result = withExtendedLifetime(session) {
            body(&virname, &scanned, &options, Unmanaged.passUnretained(session).toOpaque())
        }
        // Copy the name at once: it points into the engine's signature tables.
        let reported = virname.map { String(cString: $0) }
        switch result {
        case CL_CLEAN:
            if let problem = session.problem {
                return .uninspectable(reason: problem)
            }
            return .clean
        case CL_VIRUS:
            if let problem = session.problem {
                return .uninspectable(reason: problem)
            }
            // virname can be NULL on CL_VIRUS; the virus-found callback still saw the name.
            let signature = reported ?? session.signatures.first ?? "Heuristics.Unnamed"
            if signature.hasPrefix("Heuristics.") {
                return .heuristic(name: signature)
            }
            return .virus(signature: signature)
        default:
            throw ClamAVError(operation: operation, code: result)
        }
    }

    /// Every parser, plus the heuristics that stop libclamav from calling an unread file clean.
    private static let scanOptions = cl_scan_options(
        general: UInt32(CL_SCAN_GENERAL_HEURISTICS),
        parse: UInt32.max,
        heuristic: UInt32(
            CL_SCAN_HEURISTIC_EXCEEDS_MAX | CL_SCAN_HEURISTIC_ENCRYPTED_ARCHIVE | CL_SCAN_HEURISTIC_ENCRYPTED_DOC
                | CL_SCAN_HEURISTIC_BROKEN
        ),
        mail: 0,
        dev: 0
    )

    /// When a directory fails to load, loads each of its files alone into a scratch engine to name the culprit.
    private static func findFaultyDatabase(in path: String) -> String? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return nil }
        guard isDirectory.boolValue else { return path }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path))?.sorted() ?? []
        for name in names where !name.hasPrefix(".") {
            let file = (path as NSString).appendingPathComponent(name)
            guard let scratch = cl_engine_new() else { return nil }
            defer { cl_engine_free(scratch) }
            var loaded: UInt32 = 0
            if cl_load(file, scratch, &loaded, CCLAMAV_DB_STDOPT) != CL_SUCCESS {
                return file
            }
        }
        return nil
    }
}

/// The reader behind a handle-based file map, handed to libclamav as the map's handle.
final class ScanReader {
    let read: (UnsafeMutableRawBufferPointer, Int) -> Int

    init(_ read: @escaping (UnsafeMutableRawBufferPointer, Int) -> Int) {
        self.read = read
    }
}

/// Per-scan state handed to libclamav's callbacks as their `context`.
///
/// Only the thread running the scan touches it, for the duration of the scan.
final class ScanSession {
    let limits: ScanLimits
    var signatures: [String] = []
    /// The first reason the content cannot be fully inspected, found by the archive-metadata callback.
    var problem: String?
    /// The descriptor of the file being scanned (nil when scanning memory): its size was checked before the scan.
    let topLevelDescriptor: Int32?
    /// The archive member the metadata callback saw last, to name an extracted layer in a problem.
    private var lastMember: String?
    private var declaredBytes: UInt64 = 0

    init(limits: ScanLimits, topLevelDescriptor: Int32?) {
        self.limits = limits
        self.topLevelDescriptor = topLevelDescriptor
    }

    static func from(_ context: UnsafeMutableRawPointer) -> ScanSession {
        Unmanaged<ScanSession>.fromOpaque(context).takeUnretainedValue()
    }

    /// Checks the real size of an extracted layer; a layer that reached the file size limit may have been cut off
    /// silently. Returns false (stop, not clean) then.
    func inspectExtractedLayer(size: UInt64) -> Bool {
        guard size >= UInt64(self.limits.maxFileSize) else { return true }
        let name = self.lastMember ?? "(unnamed)"
        self.problem =
            self.problem
            ?? "archive member '\(name)' reached the file size limit of \(self.limits.maxFileSize) bytes: its content may have been cut off"
        return false
    }

    /// Checks one archive member's metadata; returns false (stop, not clean) when libclamav would skip it silently.
    func inspectMember(named name: String, size: UInt64, encrypted: Bool) -> Bool {
        self.lastMember = name
        if encrypted {
            self.problem = self.problem ?? "archive member '\(name)' is encrypted"
            return false
        }
        if size > UInt64(self.limits.maxFileSize) {
            self.problem = self.problem ?? "archive member '\(name)' is \(size) bytes, over the file size limit of \(self.limits.maxFileSize)"
            return false
        }
        self.declaredBytes += size
        if self.declaredBytes > UInt64(self.limits.maxScanSize) {
            self.problem = self.problem ?? "archive content exceeds the scan size limit of \(self.limits.maxScanSize) bytes"
            return false
        }
        return true
    }
}
