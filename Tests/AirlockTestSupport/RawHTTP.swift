public import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Sends raw bytes to a loopback HTTP server and reads its answer, for framing that HTTP clients will not produce.
public enum RawHTTP {
    /// Connects to 127.0.0.1:`port`, sends `parts` in order, and returns what the server sends until it closes
    /// the connection or `timeout` passes. The blocking socket work runs on a thread of its own, never on Swift's
    /// cooperative threads (which the servers under test need).
    public static func exchange(port: Int, parts: [Data], timeout: Int = 10) async throws -> String {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try self.exchangeBlocking(port: port, parts: parts, timeout: timeout) })
            }
        }
    }

    static func exchangeBlocking(port: Int, parts: [Data], timeout: Int) throws -> String {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        defer { close(descriptor) }
        var time = timeval(tv_sec: timeout, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw POSIXError(.init(rawValue: errno) ?? .ECONNREFUSED) }
        for part in parts {
            // A server may answer and close before reading everything: stop sending as soon as it has answered
            // (or refuses more bytes), and read its answer.
            var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, 0) > 0 { break }
            let sent = part.withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent < 0 { break }
        }
        var received = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(descriptor, &buffer, buffer.count, 0)
            if count <= 0 { break }
            received.append(contentsOf: buffer[0..<count])
            if Self.isComplete(received) { break }
        }
        return String(decoding: received, as: UTF8.self)
    }

    /// Whether a response with a Content-Length has fully arrived.
    private static func isComplete(_ data: Data) -> Bool {
        let text = String(decoding: data, as: UTF8.self)
        guard let headerEnd = text.range(of: "\r\n\r\n") else { return false }
        let headers = text[..<headerEnd.lowerBound].lowercased()
        guard let line = headers.split(separator: "\r\n").first(where: { $0.hasPrefix("content-length:") }),
            let length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces))
        else { return false }
        return data.count - text[..<headerEnd.upperBound].utf8.count >= length
    }
}

/// A raw client connection kept open across steps of a test.
public final class RawConnection: Sendable {
    private let descriptor: Int32
    /// The socket.
    var fileDescriptor: Int32 { self.descriptor }

    /// Connects to 127.0.0.1:`port`.
    public init(port: Int) throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            Glibc.close(descriptor)
            throw POSIXError(.init(rawValue: errno) ?? .ECONNREFUSED)
        }
        self.descriptor = descriptor
    }

    /// Sends bytes; returns false when the peer no longer accepts them.
    @discardableResult
    public func send(_ data: Data) -> Bool {
        data.withUnsafeBytes { Glibc.send(self.descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == data.count
    }

    /// Reads until `marker` has arrived, the peer closes, or `timeout` seconds pass; returns what arrived. The
    /// blocking read runs on a thread of its own, never on Swift's cooperative threads.
    public func receive(until marker: String, timeout: Int = 10) async -> String {
        let descriptor = self.descriptor
        return await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                var time = timeval(tv_sec: timeout, tv_usec: 0)
                setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
                var received = Data()
                var buffer = [UInt8](repeating: 0, count: 65536)
                while !String(decoding: received, as: UTF8.self).contains(marker) {
                    let count = recv(descriptor, &buffer, buffer.count, 0)
                    if count <= 0 { break }
                    received.append(contentsOf: buffer[0..<count])
                }
                continuation.resume(returning: String(decoding: received, as: UTF8.self))
            }
        }
    }

    /// Closes the connection.
    public func close() {
        Glibc.close(self.descriptor)
    }
}
