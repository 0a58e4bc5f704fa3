import AirlockCore
import AirlockTestSupport
import Crypto
import Foundation
import GRDB
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 13: each finding of the outside review reproduced as the review did it, against a live server, and shown
/// refused. (Configuration findings 1, 2 and 9 are also checked on the decision itself in ConfigurationTests; the
/// certificate binding of finding 3 in TLSTests; export and the CLI's output in AirlockCLITests.)
@Suite("security hardening (issue 13)")
struct SecurityHardeningTests {
    private func put(_ client: any TestClientProtocol, _ segments: [String], _ body: Data, contentType: String? = nil) async throws
        -> TestResponse
    {
        let path = segments.joined(separator: "/")
        let signature =
            contentType.map { XEP0363Tests.hmac("\(path)\0\(body.count)\0\($0)") } ?? XEP0363Tests.hmac("\(path) \(body.count)")
        var headers: HTTPFields = [:]
        if let contentType { headers[.contentType] = contentType }
        let query = contentType == nil ? "v=\(signature)" : "v2=\(signature)"
        return try await client.execute(uri: XEP0363Tests.uri(segments, query: query), method: .put, headers: headers, body: ByteBuffer(bytes: body))
    }

    private func metrics(_ client: any TestClientProtocol, headers: HTTPFields = [:]) async throws -> String {
        String(decoding: try await client.execute(uri: "/metrics", method: .get, headers: headers).bytes, as: UTF8.self)
    }

    /// Finding 1, live: the shipped file plus production maps in the environment. The development API key and a
    /// token signed with the public development key used to work; now only the production credentials do.
    @Test func productionMapsFromTheEnvironmentLeaveNoDevelopmentCredential() async throws {
        let base = try ServerHarness()
        let shipped = try AirlockConfiguration.load(
            file: Fixtures.packageRoot.appendingPathComponent("Config/airlock.json").path,
            environment: [
                "AIRLOCK_SERVERS": #"{"prod": {"apiKey": "prod-api-key-0123456789abcdef"}}"#,
                "AIRLOCK_TOKENS_KEYS": #"{"prod": "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="}"#,
                "AIRLOCK_TOKENS_ACTIVE_KEY_ID": "prod",
            ]
        )
        let harness = try ServerHarness {
            $0 = shipped
            $0.http.port = 0
            $0.storage = base.configuration.storage
            $0.scanner.signatureDirectories = base.configuration.scanner.signatureDirectories
        }
        try await harness.run { client in
            let development = try await client.handOff(Data("hello\n".utf8), key: AirlockConfiguration.DevelopmentSecrets.apiKey)
            #expect(development.status == .unauthorized)
            let production = try await client.handOff(Data("hello\n".utf8), key: "prod-api-key-0123456789abcdef")
            #expect(production.status == .created)
            let transfer = try production.decode(TransferBody.self)
            #expect(transfer.server == "prod")
            let forged = HandCraftedToken.download(
                transferId: transfer.id,
                recipient: "bob@example.org",
                secret: try #require(Data(base64Encoded: AirlockConfiguration.DevelopmentSecrets.tokenKey)),
                kid: "dev",
                expires: harness.clock.now.addingTimeInterval(600)
            )
            #expect(try await client.execute(uri: "/v1/files/\(forged)", method: .get).status == .forbidden)
            #expect(try await client.download(try #require(transfer.downloads?.first?.url)).status == .ok)
        }
    }

    /// Finding 2, live: a configuration that does not enable XEP-0363 has no upload path, whatever is signed with
    /// the public development secret.
    @Test func xep0363IsOffUnlessConfigured() async throws {
        let harness = try ServerHarness { $0.xep0363.enabled = false }
        try await harness.run { client in
            let response = try await self.put(client, ["slot", "note.txt"], Data("hello\n".utf8))
            #expect(response.status == .notFound)
        }
    }

    /// Finding 4: SVG (script), HTML and XML uploaded through XEP-0363 were served inline from the broker's origin.
    @Test func onlyPassiveTypesAreServedInline() async throws {
        let harness = try ServerHarness()
        let svg = Data(#"<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(document.domain)</script></svg>"#.utf8)
        let html = Data("<!DOCTYPE html><html><head><title>x</title></head><body><script>alert(1)</script></body></html>\n".utf8)
        try await harness.run { client in
            #expect(try await self.put(client, ["s1", "pic.svg"], svg).status == .created)
            #expect(try await self.put(client, ["s2", "page.html"], html).status == .created)
            #expect(try await self.put(client, ["s3", "pixel.png"], Fixtures.png).status == .created)
            for segments in [["s1", "pic.svg"], ["s2", "page.html"]] {
                let fetched = try await client.execute(uri: XEP0363Tests.uri(segments), method: .get)
                #expect(fetched.status == .ok)
                #expect(fetched.headers[.contentDisposition]?.hasPrefix("attachment;") == true, "\(segments)")
                #expect(fetched.headers[.contentType] == "application/octet-stream", "\(segments)")
                #expect(fetched.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff")
                #expect(fetched.headers[HTTPField.Name("Content-Security-Policy")!] == "default-src 'none'; sandbox")
            }
            let image = try await client.execute(uri: XEP0363Tests.uri(["s3", "pixel.png"]), method: .get)
            #expect(image.headers[.contentDisposition]?.hasPrefix("inline;") == true)
            #expect(image.headers[.contentType] == "image/png")
        }
    }

    /// Finding 6: `invoice\u{202E}fdp.js` shows as `invoicesj.pdf`; refused on both upload paths.
    @Test func bidirectionalControlsInFilenamesAreRefused() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            for control in ["\u{202E}", "\u{202A}", "\u{2066}", "\u{2069}"] {
                let name = "invoice\(control)fdp.js"
                let native = try await client.handOff(Data("x\n".utf8), filename: name)
                #expect(native.status == .badRequest, "U+\(String(control.unicodeScalars.first!.value, radix: 16))")
                #expect(try native.decode(ErrorBody.self).message.contains("bidirectional"))
                let xep = try await self.put(client, ["slot-\(control.unicodeScalars.first!.value)", name], Data("x\n".utf8))
                #expect(xep.status == .badRequest)
            }
            #expect(harness.files(under: harness.stagingDirectory).isEmpty)
            // Counted as refused uploads on both paths.
            let metrics = try await self.metrics(client)
            #expect(metrics.contains(#"airlock_refusals_total{path="transfers",reason="invalid_request",status="400"} 4"#), "\(metrics)")
            #expect(metrics.contains(#"airlock_refusals_total{path="xep0363",reason="invalid_request",status="400"} 4"#))
            #expect(metrics.contains("airlock_uploads_refused_total 8"))
        }
    }

    /// Findings 7 and 11: refused GETs on a slot URL wrote a `download` row each, and refusals on the XEP-0363
    /// paths were neither counted nor logged.
    @Test func refusalsAreCountedNotRecorded() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            #expect(try await self.put(client, ["evil", "e.txt"], Fixtures.eicar).status == .created)
            for _ in 0..<5 {
                #expect(try await client.execute(uri: XEP0363Tests.uri(["evil", "e.txt"]), method: .get).status == .forbidden)
            }
            // A forged signature, a wrong size and a replay into a taken slot.
            let forged = try await client.execute(
                uri: XEP0363Tests.uri(["forged", "f.txt"], query: "v=\(String(repeating: "0", count: 64))"),
                method: .put,
                body: ByteBuffer(string: "hello\n")
            )
            #expect(forged.status == .forbidden)
            let signedForFive = XEP0363Tests.hmac("sized/f.txt 5")
            let wrongSize = try await client.execute(
                uri: XEP0363Tests.uri(["sized", "f.txt"], query: "v=\(signedForFive)"),
                method: .put,
                body: ByteBuffer(string: "hello world\n")
            )
            #expect(wrongSize.status == .forbidden)
            #expect(try await self.put(client, ["evil", "e.txt"], Fixtures.eicar).status == .conflict)
            // A bad download token on the native path.
            #expect(try await client.execute(uri: "/v1/files/not-a-token", method: .get).status == .forbidden)

            let metrics = try await self.metrics(client)
            #expect(metrics.contains(#"airlock_refusals_total{path="xep0363",reason="quarantined",status="403"} 5"#), "\(metrics)")
            #expect(metrics.contains(#"airlock_refusals_total{path="xep0363",reason="bad_signature",status="403"} 2"#))
            #expect(metrics.contains(#"airlock_refusals_total{path="xep0363",reason="slot_taken",status="409"} 1"#))
            #expect(metrics.contains(#"airlock_refusals_total{path="files",reason="invalid_token",status="403"} 1"#))
            #expect(metrics.contains("airlock_uploads_refused_total 3"))
        }
        let database = try AppDatabase(path: harness.configuration.storage.dataDirectory + "/airlock.sqlite")
        #expect(try await database.writer.read { db in try DownloadRecord.fetchCount(db) } == 0)
    }

    /// Finding 8: an IM server could DELETE its own quarantined transfer, destroying the evidence.
    @Test func anIMServerCannotDeleteAQuarantinedTransfer() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            let quarantined = try await client.handOff(Fixtures.eicar, filename: "e.com").decode(TransferBody.self)
            #expect(quarantined.state == "quarantined")
            let refused = try await client.execute(
                uri: "/v1/transfers/\(quarantined.id)",
                method: .delete,
                headers: [.authorization: "Bearer \(ServerHarness.prosodyKey)"]
            )
            #expect(refused.status == .conflict)
            #expect(try refused.decode(ErrorBody.self).error == "held_in_quarantine")
            #expect(FileManager.default.fileExists(atPath: harness.quarantineDirectory + "/" + quarantined.id))
            let shown = try await client.execute(
                uri: "/v1/transfers/\(quarantined.id)",
                method: .get,
                headers: [.authorization: "Bearer \(ServerHarness.prosodyKey)"]
            )
            #expect(try shown.decode(TransferBody.self).state == "quarantined")
            // A clean transfer can still be retracted.
            let clean = try await client.handOff(Data("fine\n".utf8)).decode(TransferBody.self)
            let retracted = try await client.execute(
                uri: "/v1/transfers/\(clean.id)",
                method: .delete,
                headers: [.authorization: "Bearer \(ServerHarness.prosodyKey)"]
            )
            #expect(retracted.status == .noContent)
        }
    }

    /// Finding 10: the ledger was created 0644 under the usual umask; store and quarantine are private too.
    @Test func ledgerStoreAndQuarantineArePrivateWhateverTheUmask() async throws {
        let previous = umask(0o022)
        defer { umask(previous) }
        let harness = try ServerHarness()
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            #expect(try await client.handOff(Data("clean bytes\n".utf8)).status == .created)
            #expect(try await client.handOff(Fixtures.eicar, filename: "e.com").status == .created)
        }
        let data = harness.configuration.storage.dataDirectory
        var checked = 0
        for file in ["airlock.sqlite", "airlock.sqlite-wal", "airlock.sqlite-shm"].map({ "\(data)/\($0)" }) + harness.files(under: data)
            + harness.files(under: harness.quarantineDirectory)
        where FileManager.default.fileExists(atPath: file) {
            #expect(try Self.mode(file) == 0o600, "\(file)")
            checked += 1
        }
        #expect(checked >= 4)
        for directory in [data, harness.quarantineDirectory, harness.filesDirectory, harness.stagingDirectory] {
            #expect(try Self.mode(directory) == 0o700, "\(directory)")
        }
    }

    static func mode(_ path: String) throws -> Int {
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        return (attributes[.posixPermissions] as? Int ?? -1) & 0o777
    }

    @Test func metricsNeedTheBearerTokenWhenOneIsConfigured() async throws {
        let harness = try ServerHarness { $0.metrics.bearerToken = "scrape-token-0123456789" }
        try await harness.run { client in
            let anonymous = try await client.execute(uri: "/metrics", method: .get)
            #expect(anonymous.status == .unauthorized)
            #expect(anonymous.headers[.wwwAuthenticate] == "Bearer")
            let wrong = try await client.execute(uri: "/metrics", method: .get, headers: [.authorization: "Bearer scrape-token-9876543210"])
            #expect(wrong.status == .unauthorized)
            let right = try await client.execute(uri: "/metrics", method: .get, headers: [.authorization: "Bearer scrape-token-0123456789"])
            #expect(right.status == .ok)
            #expect(String(decoding: right.bytes, as: UTF8.self).contains("airlock_uploads_total"))
            // Health and readiness stay open.
            #expect(try await client.execute(uri: "/healthz", method: .get).status == .ok)
        }
    }
}
