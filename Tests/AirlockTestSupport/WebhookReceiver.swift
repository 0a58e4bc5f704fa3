import Crypto
public import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// A webhook receiver on 127.0.0.1 (Hummingbird), for the notification tests: it records every POST, checks its
/// `X-Airlock-Signature` against the secret itself (HMAC-SHA256 from swift-crypto, not Airlock's code), and answers
/// 204, or the status set with ``answer(with:)``. Started on port 0 or on a port given (to come back up where it
/// was), stopped with ``stop()``.
public final class WebhookReceiver: Sendable {
    /// One request as it arrived.
    public struct Request: Sendable {
        /// `X-Airlock-Event`.
        public var event: String?
        /// `X-Airlock-Delivery`.
        public var delivery: String?
        /// `X-Airlock-Signature`.
        public var signature: String?
        /// `Content-Type`.
        public var contentType: String?
        /// The raw body.
        public var body: Data
        /// Whether the signature is `sha256=` and the hex HMAC-SHA256 of the body with the secret.
        public var signatureIsValid: Bool
        /// What the receiver answered.
        public var answeredStatus: Int

        /// The body parsed as a JSON object.
        public var json: [String: Any] { (try? JSONSerialization.jsonObject(with: self.body)) as? [String: Any] ?? [:] }
        /// The body's `transfer` object.
        public var transfer: [String: Any] { self.json["transfer"] as? [String: Any] ?? [:] }
    }

    private struct State {
        var requests: [Request] = []
        var status = 204
        var waiters: [(condition: @Sendable ([Request]) -> Bool, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let state = Mutex(State())
    private let secret: String
    private let group: Mutex<ServiceGroup?> = Mutex(nil)
    private let running: Mutex<Task<Void, any Error>?> = Mutex(nil)
    /// The port it listens on.
    public let port: Int

    private init(secret: String, port: Int) {
        self.secret = secret
        self.port = port
    }

    /// Starts a receiver that checks signatures with `secret`, on `port` (0 picks a free one).
    public static func start(secret: String, port: Int = 0) async throws -> WebhookReceiver {
        let (portStream, portContinuation) = AsyncStream.makeStream(of: Int.self)
        let router = Router()
        let recorder = Recorder()
        router.post("/**") { request, _ -> Response in
            let body = try await request.body.collect(upTo: 1 << 20)
            let status = recorder.record(request, body: Data(body.readableBytesView))
            return Response(status: .init(code: status))
        }
        var logger = Logger(label: "airlock.test.webhook-receiver")
        logger.logLevel = .warning
        let app = Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: "webhook-receiver"),
            onServerRunning: { channel in
                portContinuation.yield(channel.localAddress?.port ?? 0)
                portContinuation.finish()
            },
            logger: logger
        )
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let task = Task { try await group.run() }
        var bound: Int?
        for await value in portStream {
            bound = value
            break
        }
        guard let bound, bound > 0 else {
            task.cancel()
            _ = try? await task.value
            throw ReceiverError.didNotStart(port: port)
        }
        let receiver = WebhookReceiver(secret: secret, port: bound)
        recorder.attach(receiver)
        receiver.group.withLock { $0 = group }
        receiver.running.withLock { $0 = task }
        return receiver
    }

    /// Stops listening and waits until the server has stopped.
    public func stop() async {
        guard let group = self.group.withLock({ $0 }) else { return }
        await group.triggerGracefulShutdown()
        _ = try? await self.running.withLock({ $0 })?.value
        self.group.withLock { $0 = nil }
    }

    /// Makes every later request answered with `status` (e.g. 503 for a receiver that is down).
    public func answer(with status: Int) {
        self.state.withLock { $0.status = status }
    }

    /// Every request received so far, in arrival order.
    public var requests: [Request] { self.state.withLock { $0.requests } }

    /// The requests once at least `count` have arrived; throws after `timeout`.
    public func requests(atLeast count: Int, timeout: Duration = .seconds(60)) async throws -> [Request] {
        try await self.requests(until: "\(count) requests", timeout: timeout) { $0.count >= count }
    }

    /// The requests once `condition` holds for them; throws after `timeout` (a bound on a hung test, not a wait
    /// that lets something happen: the wait ends as soon as a request makes `condition` true).
    public func requests(
        until what: String,
        timeout: Duration = .seconds(60),
        _ condition: @escaping @Sendable ([Request]) -> Bool
    ) async throws -> [Request] {
        let met = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let ready = self.state.withLock { state -> Bool in
                        if condition(state.requests) { return true }
                        state.waiters.append((condition, continuation))
                        return false
                    }
                    if ready { continuation.resume() }
                }
                return true
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            if !first {
                // Let the waiting child go.
                let waiters = self.state.withLock { state in
                    defer { state.waiters.removeAll() }
                    return state.waiters
                }
                for waiter in waiters { waiter.continuation.resume() }
            }
            group.cancelAll()
            return first
        }
        let requests = self.requests
        guard met, condition(requests) else {
            throw ReceiverError.timedOut(waitingFor: what, got: requests.map { "\($0.event ?? "?") \($0.delivery ?? "?") \($0.answeredStatus)" })
        }
        return requests
    }

    /// Records one request; returns the status to answer.
    fileprivate func record(event: String?, delivery: String?, signature: String?, contentType: String?, body: Data) -> Int {
        let valid = signature.map { Self.isValid($0, body: body, secret: self.secret) } ?? false
        let (status, ready) = self.state.withLock { state -> (Int, [CheckedContinuation<Void, Never>]) in
            state.requests.append(
                Request(
                    event: event,
                    delivery: delivery,
                    signature: signature,
                    contentType: contentType,
                    body: body,
                    signatureIsValid: valid,
                    answeredStatus: state.status
                )
            )
            let requests = state.requests
            let ready = state.waiters.filter { $0.condition(requests) }.map(\.continuation)
            state.waiters.removeAll { $0.condition(requests) }
            return (state.status, ready)
        }
        for continuation in ready { continuation.resume() }
        return status
    }

    /// Whether `header` is `sha256=<hex HMAC-SHA256 of body keyed with secret>`, compared in constant time.
    public static func isValid(_ header: String, body: Data, secret: String) -> Bool {
        guard header.hasPrefix("sha256="), let code = Data(hex: String(header.dropFirst(7))) else { return false }
        return HMAC<SHA256>.isValidAuthenticationCode(code, authenticating: body, using: SymmetricKey(data: Data(secret.utf8)))
    }

    /// Why the receiver failed a test.
    public enum ReceiverError: Error, CustomStringConvertible {
        case didNotStart(port: Int)
        case timedOut(waitingFor: String, got: [String])

        public var description: String {
            switch self {
            case .didNotStart(let port): "the webhook receiver could not listen on 127.0.0.1:\(port)"
            case .timedOut(let what, let got): "the webhook receiver waited in vain for \(what); it got \(got.count) requests: \(got)"
            }
        }
    }
}

/// Hands requests to the receiver once it exists (the router is built first).
private final class Recorder: Sendable {
    // Valid header names (letters and '-'), so the initialiser cannot fail.
    // swift-format-ignore: NeverForceUnwrap
    static let event = HTTPField.Name("X-Airlock-Event")!
    // swift-format-ignore: NeverForceUnwrap
    static let delivery = HTTPField.Name("X-Airlock-Delivery")!
    // swift-format-ignore: NeverForceUnwrap
    static let signature = HTTPField.Name("X-Airlock-Signature")!
    private let receiver = Mutex<WebhookReceiver?>(nil)

    func attach(_ receiver: WebhookReceiver) {
        self.receiver.withLock { $0 = receiver }
    }

    func record(_ request: Hummingbird.Request, body: Data) -> Int {
        guard let receiver = self.receiver.withLock({ $0 }) else { return 503 }
        return receiver.record(
            event: request.headers[Self.event],
            delivery: request.headers[Self.delivery],
            signature: request.headers[Self.signature],
            contentType: request.headers[.contentType],
            body: body
        )
    }
}

extension Data {
    /// Bytes from hexadecimal text; nil when it is not an even number of hex digits.
    init?(hex: String) {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let byte = UInt8(String(decoding: digits[index..<index + 2], as: UTF8.self), radix: 16) else { return nil }
            bytes.append(byte)
            index += 2
        }
        self.init(bytes)
    }
}
