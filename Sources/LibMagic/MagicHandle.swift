internal import CMagic

/// One libmagic cookie with a database loaded. Not thread-safe: ``MagicPool`` hands it to one thread at a time.
final class MagicHandle {
    private let cookie: OpaquePointer
    /// The in-memory databases the cookie reads in place, kept alive as long as it.
    private let databases: MagicDatabases?

    /// A handle on libmagic's default database.
    init() throws(MagicError) {
        self.cookie = try Self.open()
        self.databases = nil
        guard magic_load(self.cookie, nil) == 0 else {
            let message = magic_error(self.cookie).map { String(cString: $0) } ?? "cannot load the default magic database"
            throw MagicError(operation: "magic_load", message: message)
        }
    }

    /// A handle on compiled databases held in memory.
    init(databases: MagicDatabases) throws(MagicError) {
        self.cookie = try Self.open()
        self.databases = databases
        let status = databases.withBuffers { buffers, sizes, count in magic_load_buffers(self.cookie, buffers, sizes, count) }
        guard status == 0 else {
            throw MagicError(operation: "magic_load_buffers", message: self.lastError)
        }
    }

    private static func open() throws(MagicError) -> OpaquePointer {
        guard let cookie = magic_open(MAGIC_NONE) else {
            throw MagicError(operation: "magic_open", message: "out of memory")
        }
        return cookie
    }

    deinit {
        magic_close(self.cookie)
    }

    /// Identifies the type of `bytes` (typically the start of a file), with its description when `describe`.
    func identify(_ bytes: UnsafeRawBufferPointer, describe: Bool) throws(MagicError) -> FileType {
        let mimeType = try self.run(flags: MAGIC_MIME_TYPE, on: bytes)
        let description = describe ? try self.run(flags: MAGIC_NONE, on: bytes) : nil
        return FileType(mimeType: mimeType, description: description)
    }

    /// libmagic's human description of `bytes` alone.
    func describe(_ bytes: UnsafeRawBufferPointer) throws(MagicError) -> String {
        try self.run(flags: MAGIC_NONE, on: bytes)
    }

    /// Whether `bytes` are not text and no entry's MIME type fits them (``MimeEntries``' first pass).
    func isUntypedBinary(_ bytes: UnsafeRawBufferPointer) throws(MagicError) -> Bool {
        try self.run(flags: MAGIC_MIME_TYPE | MAGIC_MIME_ENCODING, on: bytes) == "application/octet-stream; charset=binary"
    }

    private func run(flags: Int32, on bytes: UnsafeRawBufferPointer) throws(MagicError) -> String {
        guard magic_setflags(self.cookie, flags) == 0 else {
            throw MagicError(operation: "magic_setflags", message: self.lastError)
        }
        // An empty buffer is legal for libmagic ("empty"), but needs a non-null pointer.
        let result: UnsafePointer<CChar>? =
            if let base = bytes.baseAddress {
                magic_buffer(self.cookie, base, bytes.count)
            } else {
                withUnsafePointer(to: 0) { magic_buffer(self.cookie, $0, 0) }
            }
        guard let result else {
            throw MagicError(operation: "magic_buffer", message: self.lastError)
        }
        // The result lives only until the next call on this cookie: copy it now.
        return String(cString: result)
    }

    private var lastError: String {
        magic_error(self.cookie).map { String(cString: $0) } ?? "unknown libmagic error"
    }
}

/// Compiled magic databases copied once into memory that is never written again, for handles that read them in
/// place (`magic_load_buffers` does not copy).
///
/// Sendable because the memory is written only in `init`, and freed only when no handle refers to it.
final class MagicDatabases: @unchecked Sendable {
    private let buffers: [UnsafeMutableRawBufferPointer]

    init(_ databases: [[UInt8]]) {
        self.buffers = databases.map { bytes in
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 16)
            bytes.withUnsafeBytes { buffer.copyMemory(from: $0) }
            return buffer
        }
    }

    deinit {
        for buffer in self.buffers { buffer.deallocate() }
    }

    func withBuffers<Result>(_ body: (UnsafeMutablePointer<UnsafeMutableRawPointer?>, UnsafeMutablePointer<Int>, Int) -> Result) -> Result {
        var pointers: [UnsafeMutableRawPointer?] = self.buffers.map(\.baseAddress)
        var sizes = self.buffers.map(\.count)
        return pointers.withUnsafeMutableBufferPointer { pointers in
            sizes.withUnsafeMutableBufferPointer { sizes in body(pointers.baseAddress!, sizes.baseAddress!, self.buffers.count) }
        }
    }
}
