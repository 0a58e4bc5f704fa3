import AirlockCore
import AirlockTestSupport
import Crypto
import Foundation
import GRDB
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

/// Quotas on a live server (issue 16): 429 with `Retry-After` for a daily quota, 507 for a stored one, a JSON error
/// naming the quota and its limit, nothing stored, the refusal counted; the uploader as each protocol names it;
/// racing uploads on each ledger backend.
@Suite("quotas on a live server")
struct QuotaHTTPTests {
    /// The error body, decoded without the server's types: `limit` must be a JSON number.
    struct QuotaErrorBody: Decodable {
        var error: String
        var message: String
        var quota: String
        var limit: Int64
    }

    /// The seconds from `date` to the next UTC midnight, rounded up (computed here, not by the product's code).
    static func secondsToMidnight(_ date: Date) -> Int {
        let seconds = date.timeIntervalSince1970
        return Int(((seconds / 86_400).rounded(.down) * 86_400 + 86_400 - seconds).rounded(.up))
    }

    /// How many transfers the SQLite ledger of `harness` holds.
    static func transferCount(_ harness: ServerHarness) async throws -> Int {
        let database = try AppDatabase(path: harness.configuration.storage.dataDirectory + "/airlock.sqlite")
        return try await database.writer.read { db in try TransferRecord.fetchCount(db) }
    }

    static func metrics(_ client: any TestClientProtocol) async throws -> String {
        String(decoding: try await client.execute(uri: "/metrics", method: .get).bytes, as: UTF8.self)
    }

    @Test func aDailyQuotaIs429WithRetryAfterAndPassesWithTheDay() async throws {
        let harness = try ServerHarness { $0.quotas.perUploader = .init(dailyBytes: 100) }
        try await harness.run { client in
            let first = try await client.handOff(Fixtures.randomBytes(count: 60, seed: 1), sender: "alice@example.org")
            #expect(first.status == .created)
            let files = harness.files(under: harness.filesDirectory)

            let refused = try await client.handOff(Fixtures.randomBytes(count: 60, seed: 2), sender: "alice@example.org")
            #expect(refused.status == .tooManyRequests)
            #expect(refused.headers[.retryAfter] == String(Self.secondsToMidnight(harness.clock.now)))
            let body = try refused.decode(QuotaErrorBody.self)
            #expect(body.error == "quota_exceeded")
            #expect(body.quota == "quotas.perUploader.dailyBytes")
            #expect(body.limit == 100)
            #expect(body.message.contains("alice@example.org"))
            // Nothing of it was kept.
            #expect(harness.files(under: harness.filesDirectory) == files)
            #expect(harness.files(under: harness.stagingDirectory).isEmpty)
            #expect(try await Self.transferCount(harness) == 1)

            // Another uploader has a quota of its own.
            #expect(try await client.handOff(Fixtures.randomBytes(count: 60, seed: 3), sender: "bob@example.org").status == .created)

            let metrics = try await Self.metrics(client)
            #expect(metrics.contains(#"airlock_quota_refusals_total{quota="quotas.perUploader.dailyBytes"} 1"#))
            #expect(metrics.contains(#"airlock_refusals_total{path="transfers",reason="quota_exceeded",status="429"} 1"#))

            // When the UTC day rolls over, alice may upload again.
            harness.clock.advance(seconds: TimeInterval(Self.secondsToMidnight(harness.clock.now)))
            #expect(try await client.handOff(Fixtures.randomBytes(count: 60, seed: 2), sender: "alice@example.org").status == .created)
        }
        #expect(try await Self.transferCount(harness) == 3)
    }

    @Test func storedQuotasAre507UntilBytesAreRetracted() async throws {
        let harness = try ServerHarness {
            $0.quotas.perServer = .init(totalBytes: 150)
            $0.limits.maxStoredBytes = 200
        }
        try await harness.run { client in
            let kept = try await client.handOff(Fixtures.randomBytes(count: 100, seed: 10)).decode(TransferBody.self)
            let refused = try await client.handOff(Fixtures.randomBytes(count: 60, seed: 11))
            #expect(refused.status == .insufficientStorage)
            #expect(refused.headers[.retryAfter] == nil)
            let body = try refused.decode(QuotaErrorBody.self)
            #expect(body.quota == "quotas.perServer.totalBytes")
            #expect(body.limit == 150)

            // Retracting gives the bytes back.
            let key: HTTPFields = [.authorization: "Bearer \(ServerHarness.prosodyKey)"]
            #expect(try await client.execute(uri: "/v1/transfers/\(kept.id)", method: .delete, headers: key).status == .noContent)
            #expect(try await client.handOff(Fixtures.randomBytes(count: 60, seed: 11)).status == .created)

            // The other server has room under its own quota (120 + 25 <= 150), but not under the broker's:
            // 60 + 120 + 25 > 200.
            #expect(try await client.handOff(Fixtures.randomBytes(count: 120, seed: 12), key: ServerHarness.ejabberdKey).status == .created)
            let full = try await client.handOff(Fixtures.randomBytes(count: 25, seed: 13), key: ServerHarness.ejabberdKey)
            #expect(full.status == .insufficientStorage)
            #expect(try full.decode(QuotaErrorBody.self).quota == "limits.maxStoredBytes")
            #expect(try full.decode(QuotaErrorBody.self).limit == 200)
            #expect(try await Self.metrics(client).contains(#"airlock_refusals_total{path="transfers",reason="quota_exceeded",status="507"} 2"#))
        }
    }

    @Test func anUploadOverItsQuotaIsRefusedBeforeItsBodyIsSent() async throws {
        let harness = try ServerHarness { $0.quotas.perUploader = .init(totalBytes: 100) }
        try await harness.run { client in
            let connection = try RawConnection(port: try #require(client.port))
            defer { connection.close() }
            // The head alone: the answer must come without a byte of the body.
            connection.send(
                Data(
                    """
                    POST /v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename=big.bin HTTP/1.1\r
                    Host: 127.0.0.1\r
                    Authorization: Bearer \(ServerHarness.prosodyKey)\r
                    Content-Length: 101\r
                    \r

                    """.utf8
                )
            )
            let answer = await connection.receive(until: "}")
            #expect(answer.contains("HTTP/1.1 507 Insufficient Storage"))
            #expect(answer.contains(#""quota":"quotas.perUploader.totalBytes""#))
        }
        #expect(try await Self.transferCount(harness) == 0)
    }

    @Test func xep0363UploadersAreTheJWTSubjectOrTheUserHashOrUnknown() async throws {
        let harness = try ServerHarness { $0.quotas.perUploader = .init(dailyFiles: 1) }
        let secret = harness.configuration.xep0363.secret
        @Sendable func hmac(_ message: String) -> String {
            HMAC<SHA256>.authenticationCode(for: Data(message.utf8), using: SymmetricKey(data: Data(secret.utf8))).map { String(format: "%02x", $0) }
                .joined()
        }
        try await harness.run { client in
            let body = Data("a note\n".utf8)
            func jwtPut(_ slot: String, subject: String, origin: String? = nil) async throws -> TestResponse {
                let now = harness.clock.now.timeIntervalSince1970
                let token = HandCraftedToken.make(
                    header: ["alg": "HS256", "typ": "JWT"],
                    claims: [
                        "slot": slot, "filename": "note.txt", "filesize": body.count, "filetype": "text/plain", "iat": Int(now),
                        "exp": Int(now + 300), "sub": subject, "expires": Int(now + 86_400),
                    ],
                    secret: Data(secret.utf8)
                )
                var headers: HTTPFields = [.authorization: "Bearer \(token)", .contentType: "text/plain"]
                if let origin { headers[.origin] = origin }
                return try await client.execute(uri: "/upload/\(slot)/note.txt", method: .put, headers: headers, body: ByteBuffer(bytes: body))
            }
            func hmacPut(_ path: String) async throws -> TestResponse {
                try await client.execute(uri: "/upload/\(path)?v=\(hmac("\(path) \(body.count)"))", method: .put, body: ByteBuffer(bytes: body))
            }
            #expect(try await jwtPut("j1", subject: "juliet@capulet.example").status == .created)
            let second = try await jwtPut("j2", subject: "juliet@capulet.example", origin: "https://chat.example.org")
            #expect(second.status == .tooManyRequests)
            #expect(second.headers[.retryAfter] != nil)
            // A web client may read Retry-After.
            #expect(second.headers[.accessControlExposeHeaders]?.contains("Retry-After") == true)
            #expect(try await jwtPut("r1", subject: "romeo@montague.example").status == .created)

            // ejabberd: the user hash is the uploader; Prosody's HMAC URLs name no one, so they share "unknown".
            #expect(try await hmacPut("hash-a/random1/a.txt").status == .created)
            #expect(try await hmacPut("hash-b/random2/b.txt").status == .created)
            #expect(try await hmacPut("hash-a/random3/c.txt").status == .tooManyRequests)
            #expect(try await hmacPut("slot-1/d.txt").status == .created)
            #expect(try await hmacPut("slot-2/e.txt").status == .tooManyRequests)
            let metrics = try await Self.metrics(client)
            #expect(metrics.contains(#"airlock_refusals_total{path="xep0363",reason="quota_exceeded",status="429"} 3"#))
        }
        #expect(try await Self.transferCount(harness) == 5)
    }

    @Test(arguments: LedgerBackendHTTPTests.backends)
    func racingUploadsForTheLastBytesOneWins(_ backend: LedgerBackendHTTPTests.Backend) async throws {
        let (harness, drop) = try await LedgerBackendHTTPTests.harness(backend) { $0.quotas.perUploader = .init(totalBytes: 100) }
        try await harness.run { client in
            let statuses = try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                for index in 0..<8 {
                    group.addTask { try await client.handOff(Fixtures.randomBytes(count: 60, seed: UInt64(100 + index))).status }
                }
                return try await group.reduce(into: [HTTPResponse.Status]()) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == .created }.count == 1, "\(statuses)")
            #expect(statuses.filter { $0 == .insufficientStorage }.count == 7, "\(statuses)")
            #expect(harness.files(under: harness.filesDirectory).count == 1)
            #expect(harness.files(under: harness.stagingDirectory).isEmpty)
        }
        try await drop()
    }

    @Test func refusedPreflightsAreCounted() async throws {
        let harness = try ServerHarness { $0.http.cors.allowedOrigins = ["https://chat.example.org"] }
        try await harness.run { client in
            let preflight = try await client.execute(
                uri: "/upload/slot/a.txt",
                method: .options,
                headers: [.origin: "https://evil.example", .accessControlRequestMethod: "PUT"]
            )
            #expect(preflight.status == .forbidden)
            #expect(
                try await Self.metrics(client).contains(#"airlock_refusals_total{path="xep0363",reason="origin_not_allowed",status="403"} 1"#)
            )
        }
    }
}

extension HTTPResponse.Status {
    /// 507, which HTTPTypes names no constant for.
    fileprivate static var insufficientStorage: Self { .init(code: 507, reasonPhrase: "Insufficient Storage") }
}
