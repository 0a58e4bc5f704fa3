import Synchronization

/// A thread-safe pool of libmagic handles: each call borrows a handle for itself alone.
public final class MagicPool: Sendable {
    private let idle: Mutex<[MagicHandleBox]>

    /// How many bytes from the start of a file are enough to identify it.
    public static let sniffLength = 1 << 20

    /// Creates a pool, loading one handle now so that a broken libmagic installation fails at start-up.
    public init() throws(MagicError) {
        let first = try MagicHandle()
        self.idle = Mutex([MagicHandleBox(first)])
    }

    /// Identifies the type of `bytes` (the start of a file, at most ``sniffLength`` bytes are needed).
    ///
    /// - Parameter describe: also produce the human description, which takes libmagic as long again.
    public func identify(_ bytes: UnsafeRawBufferPointer, describe: Bool = true) throws(MagicError) -> FileType {
        try self.withHandle { handle throws(MagicError) in try handle.identify(bytes, describe: describe) }
    }

    /// Lends a handle to `body`: one from the idle list, or a new one.
    fileprivate func withHandle<Result>(_ body: (MagicHandle) throws(MagicError) -> Result) throws(MagicError) -> Result {
        let borrowed = self.idle.withLock { $0.popLast() }
        let box = if let borrowed { borrowed } else { MagicHandleBox(try MagicHandle()) }
        defer { self.idle.withLock { $0.append(box) } }
        return try body(box.handle)
    }
}

extension MagicPool {
    /// The human description of `bytes` alone, for a type already identified without one.
    public func describe(_ bytes: UnsafeRawBufferPointer) throws(MagicError) -> String {
        try self.withHandle { handle throws(MagicError) in try handle.describe(bytes) }
    }
}

/// Carries a handle in and out of the pool's lock.
///
/// Sendable because a handle is only ever in one place: in the idle list under the lock, or borrowed by the one
/// thread that popped it, which returns it when done.
private final class MagicHandleBox: @unchecked Sendable {
    let handle: MagicHandle
    init(_ handle: MagicHandle) {
        self.handle = handle
    }
}
