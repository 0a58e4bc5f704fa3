import Crypto
import Foundation
public import NIOCore
public import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// An upload being received: its bytes go to a staging file (mode 0600) and into a SHA-256 as they arrive, so
/// the body is never held whole in memory. Writes and hashing run on the given thread pool.
public final class StagingFile: @unchecked Sendable {
    // Invariant that makes this Sendable: one upload's task owns it and awaits each call before making the next,
    // so the mutable state below is never touched by two threads at once.
    /// The staging path.
    public let path: String
    private let descriptor: Int32
    private let threadPool: NIOThreadPool
    private var hasher = SHA256()
    private var pending: [ByteBuffer] = []
    private var pendingBytes = 0
    /// Bytes received so far.
    public private(set) var size: Int64 = 0
    private var closed = false

    /// Bytes gathered before one write, to keep thread hops few.
    static let batchSize = 1 << 20

    /// Creates the staging file.
    public init(path: String, threadPool: NIOThreadPool) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw StoreError.io(operation: "create \(path)", errno: errno) }
        self.path = path
        self.descriptor = descriptor
        self.threadPool = threadPool
    }

    deinit {
        if !self.closed {
            close(self.descriptor)
        }
    }

    /// Appends received bytes.
    public func append(_ buffer: ByteBuffer) async throws {
        self.size += Int64(buffer.readableBytes)
        self.pending.append(buffer)
        self.pendingBytes += buffer.readableBytes
        if self.pendingBytes >= Self.batchSize {
            try await self.flush()
        }
    }

    /// Writes what is pending, syncs and closes the file; returns its size and SHA-256.
    public func finish() async throws -> (size: Int64, sha256: String) {
        try await self.flush()
        let descriptor = self.descriptor
        try await self.threadPool.runIfActive {
            guard fsync(descriptor) == 0 else { throw StoreError.io(operation: "fsync staging file", errno: errno) }
        }
        close(self.descriptor)
        self.closed = true
        return (self.size, self.hasher.finalize().hexString)
    }

    /// Closes and removes the file (an upload that failed or was refused).
    public func discard() {
        if !self.closed {
            close(self.descriptor)
            self.closed = true
        }
        unlink(self.path)
    }

    private func flush() async throws {
        guard !self.pending.isEmpty else { return }
        let buffers = self.pending
        self.pending = []
        self.pendingBytes = 0
        let hasherBefore = self.hasher
        let descriptor = self.descriptor
        self.hasher = try await self.threadPool.runIfActive {
            var hasher = hasherBefore
            for buffer in buffers {
                try buffer.withUnsafeReadableBytes { bytes in
                    hasher.update(bufferPointer: bytes)
                    var offset = 0
                    while offset < bytes.count {
                        let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                        if written < 0 {
                            if errno == EINTR { continue }
                            throw StoreError.io(operation: "write staging file", errno: errno)
                        }
                        offset += written
                    }
                }
            }
            return hasher
        }
    }
}
