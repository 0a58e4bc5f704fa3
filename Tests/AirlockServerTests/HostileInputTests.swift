import AirlockCore
import AirlockTestSupport
import Crypto
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

/// DESIGN §8 "hostile input": every attack gets a clear 4xx or a non-clean verdict, never a 5xx; afterwards the
/// server still serves a normal hand-off and download, and a transfer made before the attack is unaffected.
///
/// This file holds the shared harness and the attacks on names, API keys and request metadata; the framing and
/// slow-client attacks are in HostileInputFramingTests.swift, the content and token attacks in
/// HostileInputContentTests.swift.
enum Hostile {
    static let authorization = "Bearer \(ServerHarness.prosodyKey)"

    /// Runs `attack` on a fresh live server, between a baseline transfer and the checks that follow every attack.
    static func underAttack(
        _ adjust: (inout AirlockConfiguration) -> Void = { _ in },
        _ attack: @Sendable (any TestClientProtocol, Int, ServerHarness) async throws -> Void
    ) async throws {
        let harness = try ServerHarness(adjust)
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            let port = try #require(client.port)
            let baselineContent = Fixtures.randomBytes(count: 5000, seed: 4242)
            let baselineResponse = try await self.handOff(client, baselineContent, filename: "baseline.bin")
            #expect(baselineResponse.status == .created)
            let baseline = try baselineResponse.decode(TransferBody.self)
            #expect(baseline.verdict == "clean")

            try await attack(client, port, harness)

            // The server is up and serves a normal hand-off and download.
            #expect(try await client.execute(uri: "/healthz", method: .get, headers: [.connection: "close"]).status == .ok)
            let fresh = Data("a normal file after the attack \(UUID().uuidString)\n".utf8)
            let created = try await self.handOff(client, fresh, filename: "after.txt", contentType: "text/plain")
            #expect(created.status == .created)
            let transfer = try created.decode(TransferBody.self)
            #expect(transfer.verdict == "clean")
            let downloaded = try await self.download(client, try #require(transfer.downloads?.first?.url))
            #expect(downloaded.status == .ok)
            #expect(downloaded.bytes == fresh)

            // The transfer made before the attack is intact: its old link and a new one serve the same bytes.
            let old = try await self.download(client, try #require(baseline.downloads?.first?.url))
            #expect(old.status == .ok)
            #expect(self.sha256(old.bytes) == baseline.sha256)
            #expect(self.sha256(old.bytes) == self.sha256(baselineContent))
            let minted = try await client.issueToken(baseline.id, recipient: "bob@example.org")
            #expect(minted.status == .created)
            let url = try #require((try JSONSerialization.jsonObject(with: minted.bytes) as? [String: Any])?["url"] as? String)
            #expect(self.sha256(try await self.download(client, url).bytes) == baseline.sha256)

            // Nothing half-written is left behind (a cut-off upload is discarded as soon as the server notices).
            #expect(await self.eventually { harness.files(under: harness.stagingDirectory).isEmpty })
        }
    }

    /// Hands off on a connection of its own (`Connection: close`), so a connection the server closed for idling
    /// is never reused.
    static func handOff(
        _ client: any TestClientProtocol,
        _ body: Data,
        filename: String,
        sender: String = "alice@example.org",
        recipients: [String] = ["bob@example.org"],
        contentType: String? = "application/octet-stream",
        authorization: String? = Self.authorization
    ) async throws -> TestResponse {
        var query = "sender=\(self.encode(sender))&filename=\(self.encode(filename))"
        for recipient in recipients {
            query += "&recipient=\(self.encode(recipient))"
        }
        var headers: HTTPFields = [.connection: "close"]
        if let authorization { headers[.authorization] = authorization }
        if let contentType { headers[.contentType] = contentType }
        let response = try await client.execute(uri: "/v1/transfers?\(query)", method: .post, headers: headers, body: ByteBuffer(bytes: body))
        #expect(response.status.code < 500)
        return response
    }

    static func download(_ client: any TestClientProtocol, _ url: String, headers: HTTPFields = [:]) async throws -> TestResponse {
        var headers = headers
        headers[.connection] = "close"
        let response = try await client.download(url, headers: headers)
        #expect(response.status.code < 500)
        return response
    }

    /// Percent-encodes everything but unreserved ASCII, so any name reaches the server as given.
    static func encode(_ value: String) -> String {
        var allowed = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)..<Unicode.Scalar(128)))
        allowed.insert(charactersIn: "-._~@")
        return value.addingPercentEncoding(withAllowedCharacters: allowed)!
    }

    static func sha256(_ data: Data) -> String {
        SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }

    /// A raw HTTP/1.1 request: the lines joined with CRLF, a blank line, then the body.
    static func raw(_ lines: [String], body: Data = Data()) -> Data {
        Data((lines.joined(separator: "\r\n") + "\r\n\r\n").utf8) + body
    }

    /// The head of a hand-off request, for raw requests.
    static func handOffLines(filename: String = "raw.bin", extra: [String]) -> [String] {
        [
            "POST /v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename=\(filename) HTTP/1.1",
            "Host: 127.0.0.1",
            "Authorization: \(Self.authorization)",
        ] + extra
    }

    /// Polls `condition` until it holds or `seconds` pass.
    static func eventually(seconds: Double = 30, _ condition: @Sendable () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if condition() { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return condition()
    }

    /// Checks an answer given at the application layer: the status and the `{"error","message"}` body.
    static func expectJSONError(
        _ response: TestResponse,
        _ status: HTTPResponse.Status,
        code: String? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(response.status == status, sourceLocation: sourceLocation)
        let body = try? response.decode(ErrorBody.self)
        #expect(body != nil, "no JSON error body", sourceLocation: sourceLocation)
        #expect(body?.message.isEmpty == false, sourceLocation: sourceLocation)
        if let code {
            #expect(body?.error == code, sourceLocation: sourceLocation)
        }
    }

    /// Checks a raw answer given at the application layer: the status and the `{"error","message"}` body.
    static func expectJSONError(_ reply: RawReply, _ status: Int, code: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(reply.status == status, "answer: \(String(decoding: reply.bytes.prefix(300), as: UTF8.self))", sourceLocation: sourceLocation)
        let body = try? JSONDecoder().decode(ErrorBody.self, from: reply.body)
        #expect(body != nil, "no JSON error body", sourceLocation: sourceLocation)
        if let code {
            #expect(body?.error == code, sourceLocation: sourceLocation)
        }
    }

    /// Files under the clean store and the quarantine.
    static func storedFiles(_ harness: ServerHarness) -> Int {
        harness.files(under: harness.filesDirectory).count + harness.files(under: harness.quarantineDirectory).count
    }
}

@Suite("hostile input: names, API keys and metadata", .serialized)
struct HostileInputTests {
    /// Filenames the API refuses with 400: nothing usable after stripping directories, NUL and control characters
    /// (C0, DEL, C1: header injection, terminal escapes), more than 255 UTF-8 bytes.
    @Test(arguments: [
        "..", "../..", #"..\..\"#, "/", "evil\u{0}.txt", "report\r\nContent-Type: text/html\r\n\r\n<script>.txt", "del\u{7f}.txt",
        "\u{85}next-line.txt", "\u{1b}[31mred.txt", String(repeating: "a", count: 256), String(repeating: "📄", count: 64) + ".txt",
    ])
    func hostileFilenamesAre400(name: String) async throws {
        try await Hostile.underAttack { client, _, harness in
            let response = try await Hostile.handOff(client, Data("x".utf8), filename: name)
            Hostile.expectJSONError(response, .badRequest, code: "invalid_request")
            #expect(Hostile.storedFiles(harness) == 1)
        }
    }

    /// Overlong UTF-8 (`%C0%AE` is an overlong '.') and invalid UTF-8 in the filename never decode to a traversal.
    @Test(arguments: ["%C0%AE%C0%AE%2F%C0%AE%C0%AE%2Fetc%2Fpasswd", "%FF%FEname.txt", "%C0%AE%C0%AE"])
    func invalidUTF8InFilenamesIsRefusedOrHarmless(encoded: String) async throws {
        try await Hostile.underAttack { client, port, harness in
            let reply = try await RawHTTP.converse(
                port: port,
                parts: [
                    Hostile.raw(Hostile.handOffLines(filename: encoded, extra: ["Content-Length: 1", "Connection: close"]), body: Data("x".utf8))
                ]
            )
            // Either refused, or accepted under a name with no directory part: storage is by hash either way.
            let status = try #require(reply.status)
            #expect(status == 400 || status == 201, "\(status)")
            if status == 400 {
                Hostile.expectJSONError(reply, 400, code: "invalid_request")
            } else {
                let transfer = try JSONDecoder().decode(TransferBody.self, from: reply.body)
                #expect(!transfer.filename.contains("/") && transfer.filename != ".." && transfer.filename != ".")
            }
            #expect(!FileManager.default.fileExists(atPath: harness.directory.file("etc/passwd")))
        }
    }

    /// Directory parts are stripped (DESIGN §3); nothing is written outside the store, and the download names
    /// only the last component.
    @Test func pathTraversalInAFilenameIsStripped() async throws {
        try await Hostile.underAttack { client, _, harness in
            let content = Data("not a password file\n".utf8)
            let response = try await Hostile.handOff(client, content, filename: "../../../../var/../etc/passwd")
            #expect(response.status == .created)
            let transfer = try response.decode(TransferBody.self)
            #expect(transfer.filename == "passwd")
            let download = try await Hostile.download(client, try #require(transfer.downloads?.first?.url))
            #expect(download.headers[.contentDisposition] == "attachment; filename*=UTF-8''passwd")
            #expect(download.bytes == content)
            // Only the two stored files (baseline and this one), both inside the content store.
            #expect(harness.files(under: harness.directory.path).filter { $0.hasSuffix("passwd") }.isEmpty)
            #expect(harness.files(under: harness.filesDirectory).count == 2)
        }
    }

    /// A right-to-left override makes `invoice‮fdp.exe` display as `invoiceexe.pdf`: such names are refused
    /// outright (issue 13, finding 6), whatever the content, and nothing is kept.
    @Test func rightToLeftOverrideNamesAreRefused() async throws {
        try await Hostile.underAttack { client, _, _ in
            let name = "invoice\u{202E}fdp.exe"
            for (content, type) in [(Fixtures.portableExecutable, "application/pdf"), (Data("harmless\n".utf8), "text/plain")] {
                let response = try await Hostile.handOff(client, content, filename: name, contentType: type)
                #expect(response.status == .badRequest)
                #expect(try response.decode(ErrorBody.self).message.contains("bidirectional control"))
            }
        }
    }

    /// XEP-0363 paths sent raw (an HTTP client would normalise them), each with an HMAC valid for the path as
    /// written: dot segments, overlong and invalid UTF-8, CR LF, an over-long name, no filename.
    @Test(arguments: [
        "../v1/transfers", "s/%C0%AE%C0%AE/x.txt", "s/%0D%0ASet-Cookie:%20a=b", "s/" + String(repeating: "n", count: 256), "s/%FF.txt",
        "just-a-slot", "s/./x.txt",
    ])
    func hostileXEP0363PathsAre400(path: String) async throws {
        try await Hostile.underAttack { _, port, harness in
            let v = XEP0363Tests.hmac("\(path) 1")
            let reply = try await RawHTTP.converse(
                port: port,
                parts: [
                    Hostile.raw(
                        ["PUT /upload/\(path)?v=\(v) HTTP/1.1", "Host: 127.0.0.1", "Content-Length: 1", "Connection: close"],
                        body: Data("x".utf8)
                    )
                ]
            )
            Hostile.expectJSONError(reply, 400, code: "invalid_path")
            #expect(Hostile.storedFiles(harness) == 1)
        }
    }

    /// A backslash path in an XEP-0363 name is one segment on the wire; the recorded and served name is its last
    /// component.
    @Test func backslashTraversalInAnXEP0363NameIsStripped() async throws {
        try await Hostile.underAttack { client, _, _ in
            let body = Data("ini\n".utf8)
            let name = #"..\..\windows\win.ini"#
            let v = XEP0363Tests.hmac("slot/\(name) \(body.count)")
            let put = try await client.execute(
                uri: XEP0363Tests.uri(["slot", name], query: "v=\(v)"),
                method: .put,
                headers: [.connection: "close"],
                body: ByteBuffer(bytes: body)
            )
            #expect(put.status == .created)
            let get = try await client.execute(uri: XEP0363Tests.uri(["slot", name]), method: .get, headers: [.connection: "close"])
            #expect(get.bytes == body)
            #expect(get.headers[.contentDisposition]?.hasSuffix("filename*=UTF-8''win.ini") == true)
        }
    }

    /// The same signed upload URL replayed ten times at once: exactly one upload wins the slot, the others are
    /// 409 (never a 5xx from a constraint violation), and the losers leave no bytes behind.
    @Test func concurrentReplaysOfOneXEP0363SlotHaveOneWinner() async throws {
        try await Hostile.underAttack { client, _, harness in
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<10 {
                    group.addTask {
                        let body = Data("contender \(index)\n".utf8)
                        let v = XEP0363Tests.hmac("race/file.txt \(body.count)")
                        return try await client.execute(
                            uri: XEP0363Tests.uri(["race", "file.txt"], query: "v=\(v)"),
                            method: .put,
                            headers: [.connection: "close"],
                            body: ByteBuffer(bytes: body)
                        ).status.code
                    }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.filter { $0 == 201 }.count == 1, "\(statuses)")
            #expect(statuses.filter { $0 == 409 }.count == 9, "\(statuses)")
            let served = try await client.execute(uri: XEP0363Tests.uri(["race", "file.txt"]), method: .get, headers: [.connection: "close"])
            #expect(String(decoding: served.bytes, as: UTF8.self).hasPrefix("contender "))
            #expect(await Hostile.eventually { harness.files(under: harness.stagingDirectory).isEmpty })
            #expect(Hostile.storedFiles(harness) == 2)
        }
    }

    /// An XEP-0363 PUT must declare its length (the HMAC covers it): a chunked PUT is 411, whatever it carries.
    @Test func aChunkedXEP0363PutWithoutALengthIs411() async throws {
        try await Hostile.underAttack { _, port, harness in
            let v = XEP0363Tests.hmac("chunked/x.txt 5")
            let reply = try await RawHTTP.converse(
                port: port,
                parts: [
                    Hostile.raw(
                        ["PUT /upload/chunked/x.txt?v=\(v) HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked", "Connection: close"],
                        body: Data("5\r\nhello\r\n0\r\n\r\n".utf8)
                    )
                ]
            )
            Hostile.expectJSONError(reply, 411, code: "length_required")
            #expect(Hostile.storedFiles(harness) == 1)
        }
    }

    /// Authorization variants that are not exactly a configured key, in a known scheme: 401 with the JSON body.
    @Test(arguments: [
        nil, "Bearer", "Bearer ", "Basic " + Data("prosody:\(ServerHarness.prosodyKey)".utf8).base64EncodedString(), "Bearer not-the-key-at-all-000",
        "Bearer \(ServerHarness.prosodyKey)x", "Bearer \(ServerHarness.prosodyKey.dropLast())", "Token \(ServerHarness.prosodyKey)",
        ServerHarness.prosodyKey, "Bearer \(ServerHarness.prosodyKey.uppercased())",
        "Bearer \(ServerHarness.prosodyKey),\(ServerHarness.ejabberdKey)",
    ])
    func wrongOrMissingAPIKeysAre401(authorization: String?) async throws {
        try await Hostile.underAttack { client, _, harness in
            let response = try await Hostile.handOff(client, Data("unauthorised\n".utf8), filename: "u.txt", authorization: authorization)
            Hostile.expectJSONError(response, .unauthorized, code: "unauthorized")
            #expect(Hostile.storedFiles(harness) == 1)
        }
    }

    /// The API key in the query string instead of the header is not a credential.
    @Test func anAPIKeyInTheQueryIsNotACredential() async throws {
        try await Hostile.underAttack { client, _, _ in
            let response = try await client.execute(
                uri:
                    "/v1/transfers?sender=a@x&recipient=b@x&filename=q.txt&apiKey=\(ServerHarness.prosodyKey)&access_token=\(ServerHarness.prosodyKey)",
                method: .post,
                headers: [.connection: "close"],
                body: ByteBuffer(string: "x")
            )
            Hostile.expectJSONError(response, .unauthorized)
        }
    }

    /// Another IM server's key neither sees, mints tokens for nor deletes a transfer.
    @Test func anotherServersKeyCannotReachATransfer() async throws {
        try await Hostile.underAttack { client, _, _ in
            let mine = try await Hostile.handOff(client, Data("prosody's file\n".utf8), filename: "p.txt").decode(TransferBody.self)
            let foreign: HTTPFields = [.authorization: "Bearer \(ServerHarness.ejabberdKey)", .connection: "close"]
            Hostile.expectJSONError(try await client.execute(uri: "/v1/transfers/\(mine.id)", method: .get, headers: foreign), .notFound)
            Hostile.expectJSONError(try await client.execute(uri: "/v1/transfers/\(mine.id)", method: .delete, headers: foreign), .notFound)
            Hostile.expectJSONError(
                try await client.issueToken(mine.id, recipient: "bob@example.org", key: ServerHarness.ejabberdKey),
                .notFound
            )
            #expect(try await Hostile.download(client, try #require(mine.downloads?.first?.url)).status == .ok)
        }
    }

    /// Bodies of `POST /v1/transfers/{id}/tokens` that are not `{"recipient", "ttlSeconds"}`: 400, no crash, including
    /// JSON nested 30,000 deep (a recursive parser's stack) and a body over the 64 KiB the endpoint reads.
    @Test(arguments: [
        "{not json", "[]", #"{"recipient": 42}"#, #"{"recipient": "bob@example.org", "ttlSeconds": -5}"#,
        #"{"recipient": "bob@example.org", "ttlSeconds": 1e30}"#, #"{"recipient": "bob@example.org", "ttlSeconds": "60"}"#, "",
        String(repeating: "[", count: 30000) + String(repeating: "]", count: 30000),
        #"{"recipient": "bob@example.org", "pad": ""# + String(repeating: "x", count: 70000) + #""}"#,
    ])
    func invalidTokenRequestBodiesAre400(body: String) async throws {
        try await Hostile.underAttack { client, _, _ in
            let transfer = try await Hostile.handOff(client, Data("token body\n".utf8), filename: "t.txt").decode(TransferBody.self)
            let response = try await client.execute(
                uri: "/v1/transfers/\(transfer.id)/tokens",
                method: .post,
                headers: [.authorization: Hostile.authorization, .contentType: "application/json", .connection: "close"],
                body: ByteBuffer(string: body)
            )
            Hostile.expectJSONError(response, .badRequest, code: "invalid_request")
        }
    }

    /// Hand-off parameters that are not what the API expects: 400 before any byte is stored.
    @Test(arguments: [
        "filename=x.txt&recipient=b@x.org",  // no sender
        "sender=a@x.org&filename=x.txt",  // no recipient
        "sender=a@x.org&recipient=b%20c@x.org&filename=x.txt",  // space in an address
        "sender=a%0D%0Ab@x.org&recipient=b@x.org&filename=x.txt",  // CR LF in the sender
        "sender=a@x.org&recipient=b@x.org",  // no filename
        "sender=a@x.org&filename=x.txt" + String(repeating: "&recipient=r@x.org", count: 1001),  // too many recipients
    ])
    func invalidHandOffParametersAre400(query: String) async throws {
        try await Hostile.underAttack { client, _, harness in
            let response = try await client.execute(
                uri: "/v1/transfers?\(query)",
                method: .post,
                headers: [.authorization: Hostile.authorization, .connection: "close"],
                body: ByteBuffer(string: "x")
            )
            Hostile.expectJSONError(response, .badRequest, code: "invalid_request")
            #expect(Hostile.storedFiles(harness) == 1)
        }
    }

    /// Malformed `Range` headers are ignored or answered 416, never a 5xx.
    @Test(arguments: [
        "bytes=99999999999999999999999-", "bytes=-99999999999999999999", "bytes=5-2", "bytes=0-0,1-1,2-2", "bytes=--1", "items=0-1", "bytes=-0",
    ])
    func malformedRangesAreHarmless(range: String) async throws {
        try await Hostile.underAttack { client, _, _ in
            let content = Data("0123456789".utf8)
            let transfer = try await Hostile.handOff(client, content, filename: "r.txt").decode(TransferBody.self)
            let response = try await Hostile.download(client, try #require(transfer.downloads?.first?.url), headers: [.range: range])
            #expect([200, 206, 416].contains(response.status.code), "\(response.status)")
            if response.status == .ok {
                #expect(response.bytes == content)
            }
        }
    }
}
