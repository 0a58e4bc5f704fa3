import AirlockCore
import AirlockTestSupport
import Crypto
import Foundation
import GRDB
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

/// Every HMAC and JWT here is computed by the test from DESIGN §3's formulas, not by the product's code.
@Suite("XEP-0363 external upload on a live server")
struct XEP0363Tests {
    static let secret = AirlockConfiguration.development.xep0363.secret

    static func hmac(_ message: String, secret: String = Self.secret) -> String {
        HMAC<SHA256>.authenticationCode(for: Data(message.utf8), using: SymmetricKey(data: Data(secret.utf8)))
            .map { String(format: "%02x", $0) }.joined()
    }

    /// Percent-encodes a path segment as an XMPP server builds the URL (`+` is encoded too, spaces as %20).
    static func encode(_ segment: String) -> String {
        var allowed = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)..<Unicode.Scalar(128)))
        allowed.insert(charactersIn: "-._~")
        return segment.addingPercentEncoding(withAllowedCharacters: allowed)!
    }

    static func uri(_ segments: [String], query: String? = nil) -> String {
        "/upload/" + segments.map(Self.encode).joined(separator: "/") + (query.map { "?\($0)" } ?? "")
    }

    private func put(
        _ client: any TestClientProtocol,
        _ uri: String,
        _ body: Data,
        contentType: String? = nil,
        authorization: String? = nil
    ) async throws -> TestResponse {
        var headers: HTTPFields = [:]
        if let contentType { headers[.contentType] = contentType }
        if let authorization { headers[.authorization] = authorization }
        return try await client.execute(uri: uri, method: .put, headers: headers, body: ByteBuffer(bytes: body))
    }

    static let awkwardName = "résumé (final) 100%+1.txt"

    @Test func prosodyV1V2AndTokenUploadsWithAnAwkwardName() async throws {
        let harness = try ServerHarness()
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            let body = Data("Curriculum vitae\n".utf8)
            let path = "slot-v1/\(Self.awkwardName)"
            let v1 = Self.hmac("\(path) \(body.count)")
            let created = try await self.put(client, Self.uri(["slot-v1", Self.awkwardName], query: "v=\(v1)"), body, contentType: "text/plain")
            #expect(created.status == .created)

            let fetched = try await client.execute(uri: Self.uri(["slot-v1", Self.awkwardName]), method: .get)
            #expect(fetched.status == .ok)
            #expect(fetched.bytes == body)
            #expect(fetched.headers[.contentType] == "text/plain")
            #expect(
                fetched.headers[.contentDisposition]?.hasPrefix("inline; filename*=UTF-8''r%C3%A9sum%C3%A9%20%28final%29%20100%25%2B1.txt") == true
            )
            #expect(fetched.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff")
            #expect(fetched.headers[HTTPField.Name("Content-Security-Policy")!] == "default-src 'none'; sandbox")
            #expect(try await client.execute(uri: Self.uri(["slot-v1", Self.awkwardName]), method: .head).status == .ok)

            // A literal '+' in the URL is a '+', not a space.
            let plusPath = "slot-plus/a+b.txt"
            let plus = try await self.put(client, "/upload/slot-plus/a+b.txt?v=\(Self.hmac("\(plusPath) \(body.count)"))", body)
            #expect(plus.status == .created)

            let image = Fixtures.png
            let v2 = Self.hmac("slot-v2/pixel.png\0\(image.count)\0image/png")
            #expect(
                try await self.put(client, Self.uri(["slot-v2", "pixel.png"], query: "v2=\(v2)"), image, contentType: "image/png").status == .created
            )
            let shown = try await client.execute(uri: Self.uri(["slot-v2", "pixel.png"]), method: .get)
            #expect(shown.headers[.contentType] == "image/png")
            #expect(shown.headers[.contentDisposition]?.hasPrefix("inline") == true)

            // Metronome and prosody-filer: token= is v2's formula.
            let random = Fixtures.randomBytes(count: 5000, seed: 5)
            let token = Self.hmac("slot-token/data.bin\0\(random.count)\0application/octet-stream")
            let tokenUpload = try await self.put(
                client,
                Self.uri(["slot-token", "data.bin"], query: "token=\(token)"),
                random,
                contentType: "application/octet-stream"
            )
            #expect(tokenUpload.status == .created)
            let attachment = try await client.execute(uri: Self.uri(["slot-token", "data.bin"]), method: .get)
            #expect(attachment.headers[.contentDisposition]?.hasPrefix("attachment") == true)
            #expect(attachment.headers[.contentType] == "application/octet-stream")
            #expect(attachment.bytes == random)

            // With several versions, the highest one decides.
            let both = Self.hmac("slot-both/x.txt\0\(body.count)\0text/plain")
            let mixed = try await self.put(client, Self.uri(["slot-both", "x.txt"], query: "v=0000&v2=\(both)"), body, contentType: "text/plain")
            #expect(mixed.status == .created)
        }
    }

    @Test func ejabberdPathsRecordTheUserHash() async throws {
        let harness = try ServerHarness()
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            let body = Data("from ejabberd\n".utf8)
            let segments = ["3f2a9c0d5e", "Xk29aLq", "photo notes.txt"]
            let v = Self.hmac("\(segments.joined(separator: "/")) \(body.count)")
            #expect(try await self.put(client, Self.uri(segments, query: "v=\(v)"), body).status == .created)
            #expect(try await client.execute(uri: Self.uri(segments), method: .get).bytes == body)
        }
        let database = try AppDatabase(path: harness.configuration.storage.dataDirectory + "/airlock.sqlite")
        let record = try await database.writer.read { db in try TransferRecord.fetchOne(db) }
        #expect(record?.sender == "3f2a9c0d5e")
        #expect(record?.server == "xep0363")
        #expect(record?.filename == "photo notes.txt")
    }

    @Test func aUsedSlotIsNeverOverwritten() async throws {
        let harness = try ServerHarness()
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            let first = Data("first\n".utf8)
            let second = Data("second\n".utf8)
            let uri = { (body: Data) in Self.uri(["slot", "f.txt"], query: "v=\(Self.hmac("slot/f.txt \(body.count)"))") }
            #expect(try await self.put(client, uri(first), first).status == .created)
            let replay = try await self.put(client, uri(second), second)
            #expect(replay.status == .conflict)
            #expect(try await self.put(client, uri(first), first).status == .conflict)
            #expect(try await client.execute(uri: Self.uri(["slot", "f.txt"]), method: .get).bytes == first)
            #expect(harness.files(under: harness.stagingDirectory).isEmpty)
        }
    }

    @Test func badMissingOrTamperedSignaturesAre403() async throws {
        let harness = try ServerHarness()
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            let body = Data("payload\n".utf8)
            let good = Self.hmac("s/p.txt \(body.count)")
            #expect(try await self.put(client, Self.uri(["s", "p.txt"]), body).status == .forbidden)
            var tampered = Array(good)
            tampered[0] = tampered[0] == "a" ? "b" : "a"
            #expect(try await self.put(client, Self.uri(["s", "p.txt"], query: "v=\(String(tampered))"), body).status == .forbidden)
            // Signed for another path, another length, another secret.
            #expect(try await self.put(client, Self.uri(["s", "q.txt"], query: "v=\(good)"), body).status == .forbidden)
            #expect(try await self.put(client, Self.uri(["s", "p.txt"], query: "v=\(good)"), body + body).status == .forbidden)
            let foreign = Self.hmac("s/p.txt \(body.count)", secret: String(repeating: "x", count: 40))
            #expect(try await self.put(client, Self.uri(["s", "p.txt"], query: "v=\(foreign)"), body).status == .forbidden)
            // v2 covers the content type.
            let v2 = Self.hmac("s/p.txt\0\(body.count)\0text/plain")
            #expect(try await self.put(client, Self.uri(["s", "p.txt"], query: "v2=\(v2)"), body, contentType: "text/html").status == .forbidden)
            #expect(try await client.execute(uri: Self.uri(["s", "p.txt"]), method: .get).status == .notFound)
        }
    }

    @Test func oversizeIsRefusedEvenWithAValidSignature() async throws {
        let harness = try ServerHarness()
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            let body = Data(count: (1 << 20) + 1)
            let v = Self.hmac("big/file.bin \(body.count)")
            let response = try await self.put(client, Self.uri(["big", "file.bin"], query: "v=\(v)"), body)
            #expect(response.status == .contentTooLarge)
            #expect(harness.files(under: harness.stagingDirectory).isEmpty)
        }
    }

    @Test func hostileNamesAreRefused() async throws {
        let harness = try ServerHarness()
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            let body = Data("x".utf8)
            for (raw, decoded) in [
                ("s/%2E%2E", "s/.."), ("s/a%2Fb.txt", "s/a/b.txt"), ("s/nul%00.txt", "s/nul\0.txt"), ("s/bell%07.txt", "s/bell\u{07}.txt"),
                ("s//x.txt", "s//x.txt"),
            ] {
                let v = Self.hmac("\(decoded) \(body.count)")
                let response = try await self.put(client, "/upload/\(raw)?v=\(v)", body)
                #expect(response.status == .badRequest, "\(raw)")
            }
            // A malformed escape, sent raw (HTTP clients would re-encode it).
            let v = Self.hmac("s/%zz.txt \(body.count)")
            let raw = "PUT /upload/s/%zz.txt?v=\(v) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\n\r\nx"
            let answer = try await RawHTTP.exchange(port: try #require(client.port), parts: [Data(raw.utf8)])
            #expect(answer.hasPrefix("HTTP/1.1 400"))
        }
    }

    @Test func prosodyFileShareJWTs() async throws {
        let harness = try ServerHarness()
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            let body = Data("shared with jwt\n".utf8)
            let secret = Data(Self.secret.utf8)
            func jwt(
                slot: String = "jwt-slot",
                filename: String = "note.txt",
                size: Int = body.count,
                expires: TimeInterval = 300,
                key: Data = secret
            )
                -> String
            {
                let now = harness.clock.now.timeIntervalSince1970
                return HandCraftedToken.make(
                    header: ["alg": "HS256", "typ": "JWT"],
                    claims: [
                        "slot": slot, "filename": filename, "filesize": size, "filetype": "text/plain", "iat": Int(now),
                        "exp": Int(now + expires), "sub": "juliet@capulet.example", "expires": Int(now + 86400),
                    ],
                    secret: key
                )
            }
            let uri = Self.uri(["jwt-slot", "note.txt"])
            #expect(try await self.put(client, uri, body, authorization: "Bearer \(jwt(expires: -10))").status == .gone)
            #expect(try await self.put(client, uri, body, authorization: "Bearer \(jwt(key: Data(repeating: 1, count: 32)))").status == .unauthorized)
            #expect(try await self.put(client, uri, body, authorization: "Bearer not.a.jwt").status == .unauthorized)
            #expect(try await self.put(client, uri, body, authorization: "Basic dXNlcjpwYXNz").status == .unauthorized)
            #expect(try await self.put(client, uri, body, authorization: "Bearer \(jwt(slot: "other"))").status == .badRequest)
            #expect(try await self.put(client, uri, body, authorization: "Bearer \(jwt(filename: "other.txt"))").status == .badRequest)
            #expect(try await self.put(client, uri, body, authorization: "Bearer \(jwt(size: body.count + 1))").status == .contentTooLarge)
            let none =
                HandCraftedToken.base64URL(Data(#"{"alg":"none","typ":"JWT"}"#.utf8)) + "."
                + HandCraftedToken.base64URL(Data(#"{"slot":"jwt-slot","filename":"note.txt","filesize":16,"exp":9999999999}"#.utf8)) + "."
            #expect(try await self.put(client, uri, body, authorization: "Bearer \(none)").status == .unauthorized)

            #expect(try await self.put(client, uri, body, contentType: "text/plain", authorization: "Bearer \(jwt())").status == .created)
            #expect(try await client.execute(uri: uri, method: .get).bytes == body)
        }
        let database = try AppDatabase(path: harness.configuration.storage.dataDirectory + "/airlock.sqlite")
        let record = try await database.writer.read { db in try TransferRecord.fetchOne(db) }
        #expect(record?.sender == "juliet@capulet.example")
    }

    @Test func eicarIsNeverServed() async throws {
        let harness = try ServerHarness()
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            let v2 = Self.hmac("evil/eicar.txt\0\(Fixtures.eicar.count)\0text/plain")
            let upload = try await self.put(client, Self.uri(["evil", "eicar.txt"], query: "v2=\(v2)"), Fixtures.eicar, contentType: "text/plain")
            // The upload itself succeeded; the file is quarantined.
            #expect(upload.status == .created)
            let fetched = try await client.execute(uri: Self.uri(["evil", "eicar.txt"]), method: .get)
            #expect(fetched.status == .forbidden)
            #expect(fetched.bytes.range(of: Fixtures.eicar) == nil)
            #expect(try await client.execute(uri: Self.uri(["evil", "eicar.txt"]), method: .head).status == .forbidden)
            #expect(harness.files(under: harness.filesDirectory).isEmpty)
            #expect(try await client.execute(uri: Self.uri(["nothing", "here.txt"]), method: .get).status == .notFound)
        }
        // Refused GETs and HEADs are counted and logged, never written to the ledger (issue 13, finding 7).
        let database = try AppDatabase(path: harness.configuration.storage.dataDirectory + "/airlock.sqlite")
        #expect(try await database.writer.read { db in try DownloadRecord.fetchCount(db) } == 0)
    }
}
