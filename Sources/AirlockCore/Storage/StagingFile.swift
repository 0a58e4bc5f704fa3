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
    /// The size the sender announced (Content-Length), when known.
    public let expectedSize: Int64?
    /// How much has been written, for a scan that reads the file while it is received.
    let progress = StagingProgress()
    private let descriptor: Int32
    private let threadPool: NIOThreadPool
    private var hasher = SHA256()
    /// The byte values counted so far, with the hash (``ContentClass``); whole once ``finish()`` returned.
    public private(set) var histogram = ByteHistogram()
    private var pending: [ByteBuffer] = []
    private var pendingBytes = 0
    /// Bytes received so far.
    public private(set) var size: Int64 = 0
    private var written: Int64 = 0
    private var closed = false

    /// Bytes gathered before one write, to keep thread hops few.
    static let batchSize = 1 << 20

    /// Creates the staging file.
    ///
    /// - Parameter expectedSize: the announced size (Content-Length), which lets the inspection start before the
    ///   last byte arrives.
    public init(path: String, expectedSize: Int64? = nil, threadPool: NIOThreadPool) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw StoreError.io(operation: "create \(path)", errno: errno) }
        self.path = path
        self.expectedSize = expectedSize
        self.descriptor = descriptor
        self.threadPool = threadPool
    }

    deinit {
        self.progress.end(complete: false)
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

    /// Writes what is pending and closes the file; returns its size and SHA-256.
    ///
    /// The file is not synced here: only bytes that become new content in the store need to be
    /// (``FileStore/syncFile(_:)``); a repeat upload's bytes are dropped, a quarantined one is re-encrypted.
    public func finish() async throws -> (size: Int64, sha256: String) {
        try await self.flush()
        self.progress.end(complete: true)
        close(self.descriptor)
        self.closed = true
        return (self.size, self.hasher.finalize().hexString)
    }

    /// Closes and removes the file (an upload that failed or was refused).
    public func discard() {
        self.progress.end(complete: false)
        if !self.closed {
            close(self.descriptor)
            self.closed = true
        }
        unlink(self.path)
    }

    private func flush() async throws {
        guard !self.pending.isEmpty else { return }
        let buffers = self.pending
        self.written += Int64(self.pendingBytes)
        let writtenAfter = self.written
        self.pending = []
        self.pendingBytes = 0
        let hasherBefore = self.hasher
        let histogramBefore = self.histogram
        let descriptor = self.descriptor
        (self.hasher, self.histogram) = try await self.threadPool.runIfActive {
            var hasher = hasherBefore
            var histogram = histogramBefore
            for buffer in buffers {
                try buffer.withUnsafeReadableBytes { bytes in
                    hasher.update(bufferPointer: bytes)
                    histogram.add(bytes)
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
            return (hasher, histogram)
        }
        self.progress.advance(to: writtenAfter)
    }
}

/// The written length of a staging file, shared with a scan that reads the file while it is received.
final class StagingProgress: @unchecked Sendable {
    // Invariant that makes this Sendable: every field is read and written with `condition` locked.
    private let condition = NSCondition()
    private var written: Int64 = 0
    private var ended = false
    private var complete = false

    /// More bytes are on disk.
    func advance(to written: Int64) {
        self.condition.lock()
        self.written = written
        self.condition.broadcast()
        self.condition.unlock()
    }

    /// No more bytes will come: the upload is complete, or it failed and the file is going away.
    func end(complete: Bool) {
        self.condition.lock()
        if !self.ended {
            self.ended = true
            self.complete = complete
        }
        self.condition.broadcast()
        self.condition.unlock()
    }

    /// Blocks until `length` bytes are on disk (true), or until the upload ends short of them or `stop` returns
    /// true (false). `stop` is checked whenever the state changes and once a second.
    func wait(forLength length: Int64, stop: () -> Bool) -> Bool {
        self.condition.lock()
        defer { self.condition.unlock() }
        while self.written < length {
            if self.ended || stop() { return false }
            _ = self.condition.wait(until: Date(timeIntervalSinceNow: 1))
        }
        return true
    }

    /// The bytes on disk, and whether the upload has ended.
    var state: (written: Int64, ended: Bool) {
        self.condition.lock()
        defer { self.condition.unlock() }
        return (self.written, self.ended)
    }

    /// Blocks until more than `length` bytes are on disk, the upload ends, or `stop` returns true (checked whenever
    /// the state changes and once a second).
    func waitForChange(beyond length: Int64, stop: () -> Bool) {
        self.condition.lock()
        defer { self.condition.unlock() }
        while self.written <= length, !self.ended, !stop() {
            _ = self.condition.wait(until: Date(timeIntervalSinceNow: 1))
        }
    }

    /// Wakes waiters so they check their `stop` condition.
    func wakeWaiters() {
        self.condition.lock()
        self.condition.broadcast()
        self.condition.unlock()
    }

    /// Whether the upload completed (every byte written).
    var isComplete: Bool {
        self.condition.lock()
        defer { self.condition.unlock() }
        return self.complete
    }
}
