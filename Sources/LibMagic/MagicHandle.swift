internal import CMagic

/// One libmagic cookie with the default database loaded. Not thread-safe: ``MagicPool`` hands it to one thread at a time.
final class MagicHandle {
    private let cookie: OpaquePointer

    init() throws(MagicError) {
        guard let cookie = magic_open(MAGIC_NONE) else {
            throw MagicError(operation: "magic_open", message: "out of memory")
        }
        guard magic_load(cookie, nil) == 0 else {
            let message = magic_error(cookie).map { String(cString: $0) } ?? "cannot load the default magic database"
            magic_close(cookie)
            throw MagicError(operation: "magic_load", message: message)
        }
        self.cookie = cookie
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
