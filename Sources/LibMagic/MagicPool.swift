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
        let borrowed = self.idle.withLock { $0.popLast() }
        let box = if let borrowed { borrowed } else { MagicHandleBox(try MagicHandle()) }
        defer { self.idle.withLock { $0.append(box) } }
        return try box.handle.identify(bytes, describe: describe)
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
