import AirlockCore
import AirlockServer
import AirlockTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import Synchronization

/// A broker on temporary directories with the bundled signatures, two IM servers and an adjustable clock.
final class ServerHarness: Sendable {
    let directory: TemporaryDirectory
    let configuration: AirlockConfiguration
    let clock = TestClock()

    static let prosodyKey = "prosody-api-key-0123456789"
    static let ejabberdKey = "ejabberd-api-key-0123456789"

    init(_ adjust: (inout AirlockConfiguration) -> Void = { _ in }) throws {
        let directory = try TemporaryDirectory()
        var configuration = AirlockConfiguration.development
        configuration.http.host = "127.0.0.1"
        configuration.http.port = 0
        configuration.storage.dataDirectory = directory.file("var")
        configuration.storage.quarantineDirectory = directory.file("Quarantine")
        configuration.scanner.signatureDirectories = [Fixtures.signatureDirectory]
        configuration.scanner.workers = 2
        configuration.limits.maxUploadBytes = 1 << 20
        // Group commit on, as shipped (`ledger.groupCommitMicroseconds` 2000). It was off here while the full suite made
        // 50 concurrent hand-offs time out waiting for connections: that was the test client's eight-connection pool
        // queueing the rest against its own time-outs (fiftyConcurrentHandOffs now opens fifty), not the server.
        configuration.servers = [
            "prosody": .init(apiKey: Self.prosodyKey),
            "ejabberd": .init(apiKey: Self.ejabberdKey),
        ]
        adjust(&configuration)
        self.directory = directory
        self.configuration = configuration
    }

    /// Runs a live server on a loopback port for the duration of `test`.
    func run<Value: Sendable>(
        scheme: TestHTTPScheme = .http,
        _ test: @Sendable (any TestClientProtocol) async throws -> Value
    ) async throws -> Value {
        var logger = Logger(label: "airlock.test")
        logger.logLevel = .warning
        let clock = self.clock
        let app = try await buildApplication(configuration: self.configuration, logger: logger, now: { clock.now })
        return try await app.test(.ahc(scheme), test)
    }

    var quarantineDirectory: String { self.configuration.storage.quarantineDirectory }
    var stagingDirectory: String { (self.configuration.storage.dataDirectory as NSString).appendingPathComponent("staging") }
    var filesDirectory: String { (self.configuration.storage.dataDirectory as NSString).appendingPathComponent("files") }

    /// Every regular file under `path`.
    func files(under path: String) -> [String] {
        TemporaryDirectory.regularFiles(under: path)
    }
}

/// A clock the tests move by hand.
final class TestClock: Sendable {
    private let current = Mutex(Date())
    var now: Date { self.current.withLock { $0 } }
    func advance(seconds: TimeInterval) {
        self.current.withLock { $0 += seconds }
    }
}

/// The transfer JSON as a client reads it (decoded independently of the server's types).
struct TransferBody: Decodable {
    var id: String
    var server: String
    var sender: String
    var recipients: [String]
    var filename: String
    var size: Int
    var sha256: String
    var declaredType: String?
    var detectedType: String?
    var verdict: String
    var signature: String?
    var reason: String?
    var state: String
    var createdAt: String
    var downloads: [Grant]?

    struct Grant: Decodable {
        var recipient: String
        var url: String
        var expiresAt: String
    }
}

struct ErrorBody: Decodable {
    var error: String
    var message: String
    var verdict: String?
    var signature: String?
    var reason: String?
}

extension TestResponse {
    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try JSONDecoder().decode(type, from: Data(self.body.readableBytesView))
    }

    var bytes: Data { Data(self.body.readableBytesView) }
}

extension TestClientProtocol {
    /// Hands off `body` as the given server, sender and recipients.
    func handOff(
        _ body: Data,
        filename: String = "file.bin",
        sender: String = "alice@example.org",
        recipients: [String] = ["bob@example.org"],
        contentType: String? = "application/octet-stream",
        key: String? = ServerHarness.prosodyKey
    ) async throws -> TestResponse {
        var query = "sender=\(Self.encode(sender))&filename=\(Self.encode(filename))"
        for recipient in recipients {
            query += "&recipient=\(Self.encode(recipient))"
        }
        var headers: HTTPFields = [:]
        if let key { headers[.authorization] = "Bearer \(key)" }
        if let contentType { headers[.contentType] = contentType }
        return try await self.execute(uri: "/v1/transfers?\(query)", method: .post, headers: headers, body: ByteBuffer(bytes: body))
    }

    /// The path of a download URL (the server's `publicBaseURL` is not where the test server listens).
    func download(_ url: String, method: HTTPRequest.Method = .get, headers: HTTPFields = [:]) async throws -> TestResponse {
        let path = url.range(of: "/v1/files/").map { String(url[$0.lowerBound...]) } ?? url
        return try await self.execute(uri: path, method: method, headers: headers)
    }

    func issueToken(_ transferId: String, recipient: String, ttlSeconds: Int? = nil, key: String = ServerHarness.prosodyKey) async throws
        -> TestResponse
    {
        var body = ["recipient": recipient] as [String: Any]
        body["ttlSeconds"] = ttlSeconds
        return try await self.execute(
            uri: "/v1/transfers/\(transferId)/tokens",
            method: .post,
            headers: [.authorization: "Bearer \(key)", .contentType: "application/json"],
            body: ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: body))
        )
    }

    static func encode(_ value: String) -> String {
        var allowed = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)..<Unicode.Scalar(128)))
        allowed.insert(charactersIn: "-._~@")
        return value.addingPercentEncoding(withAllowedCharacters: allowed)!
    }
}
