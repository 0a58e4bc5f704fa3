import AirlockCore
import Hummingbird
import NIOCore

/// Cuts off request bodies that arrive slower than `http.minimumUploadBytesPerSecond` on average, once they have
/// been arriving for `http.idleTimeoutSeconds`.
///
/// The connection's idle timeout only notices a client that stops sending; one that trickles a byte just before
/// each timeout would otherwise hold its connection (and one of `http.maxConnections`) for as long as it likes.
struct UploadPace {
    private let minimumBytesPerSecond: Int
    private let grace: Duration
    private let started = ContinuousClock.now
    private var received = 0

    init(_ http: AirlockConfiguration.HTTP) {
        self.minimumBytesPerSecond = http.minimumUploadBytesPerSecond
        self.grace = .seconds(http.idleTimeoutSeconds)
    }

    /// Counts `count` more bytes received.
    ///
    /// - Throws: ``APIError`` 408 when the body is too slow; the connection's input is then closed, so the server
    ///   does not go on reading (and draining) the rest of a body it has refused.
    mutating func received(_ count: Int, on channel: any Channel) throws {
        self.received += count
        guard self.minimumBytesPerSecond > 0 else { return }
        let elapsed = ContinuousClock.now - self.started
        guard elapsed > self.grace else { return }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        guard Double(self.received) < Double(self.minimumBytesPerSecond) * seconds else { return }
        channel.close(mode: .input, promise: nil)
        throw APIError(
            .requestTimeout,
            "upload_too_slow",
            "the body arrived at less than \(self.minimumBytesPerSecond) bytes per second (http.minimumUploadBytesPerSecond)"
        )
    }
}
