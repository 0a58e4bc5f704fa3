public import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// What a server sent back on a raw connection.
public struct RawReply: Sendable {
    /// Every byte received.
    public var bytes: Data
    /// Whether the server closed the connection (rather than the read timing out).
    public var closedByServer: Bool

    /// The status codes of every response in `bytes`, in order.
    public var statuses: [Int] {
        var statuses: [Int] = []
        var rest = self.bytes[...]
        while let response = Self.parseResponse(rest) {
            statuses.append(response.status)
            rest = rest[response.end...]
        }
        return statuses
    }

    /// The status of the first response, or nil when the server answered nothing.
    public var status: Int? { Self.parseResponse(self.bytes[...])?.status }

    /// The body of the first response.
    public var body: Data {
        guard let response = Self.parseResponse(self.bytes[...]) else { return Data() }
        return Data(self.bytes[response.bodyStart..<response.end])
    }

    /// The header block of the first response, lower-cased.
    public var headers: String {
        guard let end = self.bytes.range(of: Data("\r\n\r\n".utf8)) else { return "" }
        return String(decoding: self.bytes[..<end.lowerBound], as: UTF8.self).lowercased()
    }

    /// The status, body range and end of the response that starts `data`.
    private static func parseResponse(_ data: Data.SubSequence) -> (status: Int, bodyStart: Int, end: Int)? {
        guard data.starts(with: Data("HTTP/1.".utf8)), let headerEnd = data.range(of: Data("\r\n\r\n".utf8)) else { return nil }
        let head = String(decoding: data[data.startIndex..<headerEnd.lowerBound], as: UTF8.self)
        let lines = head.split(separator: "\r\n")
        guard let statusLine = lines.first else { return nil }
        let fields = statusLine.split(separator: " ")
        guard fields.count >= 2, let status = Int(fields[1]) else { return nil }
        var length = 0
        for line in lines.dropFirst() where line.lowercased().hasPrefix("content-length:") {
            length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
        }
        let bodyStart = headerEnd.upperBound
        return (status, bodyStart, min(data.endIndex, bodyStart + length))
    }
}

extension RawHTTP {
    /// Connects to 127.0.0.1:`port`, sends `parts`, optionally shuts down the sending side (so the server sees
    /// the end of the request stream), then reads until the server closes the connection or `timeout` seconds
    /// pass without a byte. Runs on a thread of its own, never on Swift's cooperative threads (nor on dispatch's shared pool, which GRDB needs).
    public static func converse(port: Int, parts: [Data], halfClose: Bool = false, timeout: Int = 15) async throws -> RawReply {
        try await Blocking.run {
            let connection = try RawConnection(port: port)
            defer { connection.close() }
            for part in parts where !connection.send(part) {
                break
            }
            if halfClose {
                connection.finishSending()
            }
            return connection.readUntilClosed(timeout: timeout)
        }
    }

    /// Sends `prefix` at once, then `bytes` one byte at a time, `interval` milliseconds apart, as a slowloris
    /// client does, until the server closes the connection or `deadline` seconds pass; returns whether the server
    /// closed it and how many bytes it took. Runs on a thread of its own.
    public static func drip(
        port: Int,
        prefix: Data = Data(),
        bytes: Data,
        interval: Int32,
        deadline: TimeInterval
    ) async throws -> (closedByServer: Bool, sent: Int) {
        try await Blocking.run {
            let connection = try RawConnection(port: port)
            defer { connection.close() }
            if !prefix.isEmpty, !connection.send(prefix) {
                return (true, 0)
            }
            let end = Date().addingTimeInterval(deadline)
            var sent = 0
            while Date() < end {
                // Waiting for the socket to become readable paces the drip and notices the server closing it.
                if connection.waitForInput(milliseconds: interval) {
                    if connection.readUntilClosed(timeout: 5).closedByServer { return (true, sent) }
                }
                let byte = bytes[bytes.startIndex + sent % bytes.count]
                guard connection.send(Data([byte])) else { return (true, sent) }
                sent += 1
            }
            return (false, sent)
        }
    }
}

extension RawConnection {
    /// Shuts down the sending side; the server reads end-of-stream.
    public func finishSending() {
        shutdown(self.fileDescriptor, Int32(SHUT_WR))
    }

    /// Whether the connection has input (or was closed) within `milliseconds`.
    public func waitForInput(milliseconds: Int32) -> Bool {
        var poller = pollfd(fd: self.fileDescriptor, events: Int16(POLLIN), revents: 0)
        return poll(&poller, 1, milliseconds) > 0
    }

    /// Reads until the peer closes or `timeout` seconds pass without input.
    public func readUntilClosed(timeout: Int) -> RawReply {
        var received = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while self.waitForInput(milliseconds: Int32(timeout * 1000)) {
            let count = recv(self.fileDescriptor, &buffer, buffer.count, 0)
            if count <= 0 { return RawReply(bytes: received, closedByServer: true) }
            received.append(contentsOf: buffer[0..<count])
        }
        return RawReply(bytes: received, closedByServer: false)
    }
}

/// Runs blocking work (sockets, child processes, file building) on a thread of its own, so it never occupies one of
/// Swift's cooperative threads, which the servers under test need.
public enum Blocking {
    /// Runs `work` on a thread of its own (not dispatch's shared pool, which GRDB's queues need) and returns its result.
    public static func run<Value: Sendable>(_ work: @escaping @Sendable () throws -> Value) async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try work() })
            }
        }
    }
}
