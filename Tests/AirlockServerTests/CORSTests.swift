import AirlockCore
import AirlockTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

/// CORS for browser-based XMPP clients, on a live server: preflights, the headers of answers (errors included),
/// listed and refused origins, and no CORS at all on the native hand-off API. `BrowserCORSTests` does the same
/// uploads from a real browser.
@Suite("CORS for web clients on a live server")
struct CORSTests {
    static let chat = "https://chat.example.org"
    static let elsewhere = "https://elsewhere.example.net"

    /// `uri`'s XEP-0363 v2 signature for `body` as `contentType`.
    static func signedUpload(_ slot: String, _ filename: String, _ body: Data, contentType: String) -> String {
        let v2 = XEP0363Tests.hmac("\(slot)/\(filename)\0\(body.count)\0\(contentType)")
        return XEP0363Tests.uri([slot, filename], query: "v2=\(v2)")
    }

    func preflight(
        _ client: any TestClientProtocol,
        _ uri: String,
        origin: String = Self.chat,
        method: String = "PUT",
        headers requested: String? = "authorization, content-type"
    ) async throws -> TestResponse {
        var headers: HTTPFields = [.origin: origin, .accessControlRequestMethod: method]
        if let requested { headers[.accessControlRequestHeaders] = requested }
        return try await client.execute(uri: uri, method: .options, headers: headers)
    }

    @Test func preflightsOnTheUploadAndDownloadPaths() async throws {
        let harness = try ServerHarness()
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            let upload = try await self.preflight(client, "/upload/slot/photo.jpg")
            #expect(upload.status == .noContent)
            #expect(upload.headers[.accessControlAllowOrigin] == "*")
            #expect(upload.headers[.accessControlAllowMethods] == "PUT, GET, HEAD, OPTIONS")
            let allowedHeaders = Set(
                (upload.headers[.accessControlAllowHeaders] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            )
            #expect(allowedHeaders.isSuperset(of: ["authorization", "content-type"]))
            #expect(upload.headers[.accessControlMaxAge].flatMap(Int.init).map { $0 > 0 } == true)
            // Capability URLs, no cookies: credentials are never allowed, and `*` does not vary by origin.
            #expect(upload.headers[.accessControlAllowCredentials] == nil)
            #expect(upload.headers[.vary] == nil)

            let download = try await self.preflight(client, "/v1/files/some-token", method: "GET", headers: "range")
            #expect(download.status == .noContent)
            #expect(download.headers[.accessControlAllowOrigin] == "*")
            #expect(download.headers[.accessControlAllowMethods] == "GET, HEAD, OPTIONS")

            // A plain OPTIONS (no Access-Control-Request-Method) is not a preflight: still 405, readable by a page.
            let plain = try await client.execute(uri: "/upload/slot/photo.jpg", method: .options, headers: [.origin: Self.chat])
            #expect(plain.status == .methodNotAllowed)
            #expect(plain.headers[.accessControlAllowOrigin] == "*")
        }
    }

    @Test func answersCarryAllowOriginErrorsIncluded() async throws {
        let harness = try ServerHarness()
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            let body = Data("from a web client\n".utf8)
            let origin: HTTPFields = [.origin: Self.chat]
            var put = origin
            put[.contentType] = "text/plain"
            let uri = Self.signedUpload("web", "note.txt", body, contentType: "text/plain")
            let created = try await client.execute(uri: uri, method: .put, headers: put, body: ByteBuffer(bytes: body))
            #expect(created.status == .created)
            #expect(created.headers[.accessControlAllowOrigin] == "*")

            let fetched = try await client.execute(uri: XEP0363Tests.uri(["web", "note.txt"]), method: .get, headers: origin)
            #expect(fetched.status == .ok)
            #expect(fetched.bytes == body)
            #expect(fetched.headers[.accessControlAllowOrigin] == "*")
            let exposed = Set(
                (fetched.headers[.accessControlExposeHeaders] ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            )
            #expect(exposed.isSuperset(of: ["Content-Disposition", "Content-Length"]))
            let head = try await client.execute(uri: XEP0363Tests.uri(["web", "note.txt"]), method: .head, headers: origin)
            #expect(head.status == .ok && head.headers[.accessControlAllowOrigin] == "*")

            // Error answers too, so that a page can read why.
            let taken = try await client.execute(uri: uri, method: .put, headers: put, body: ByteBuffer(bytes: body))
            #expect(taken.status == .conflict && taken.headers[.accessControlAllowOrigin] == "*")
            let forged = try await client.execute(uri: "/upload/web/other.txt?v2=00", method: .put, headers: put, body: ByteBuffer(bytes: body))
            #expect(forged.status == .forbidden && forged.headers[.accessControlAllowOrigin] == "*")
            #expect(try forged.decode(ErrorBody.self).error == "bad_signature")
            let unknown = try await client.execute(uri: XEP0363Tests.uri(["web", "nothing.txt"]), method: .get, headers: origin)
            #expect(unknown.status == .notFound && unknown.headers[.accessControlAllowOrigin] == "*")
            let badToken = try await client.execute(uri: "/v1/files/not-a-token", method: .get, headers: origin)
            #expect(badToken.status == .forbidden && badToken.headers[.accessControlAllowOrigin] == "*")

            // A recipient's download URL, handed off by an IM server.
            let handedOff = try await client.handOff(body).decode(TransferBody.self)
            let url = try #require(handedOff.downloads?.first?.url)
            let downloaded = try await client.download(url, headers: origin)
            #expect(downloaded.status == .ok && downloaded.bytes == body)
            #expect(downloaded.headers[.accessControlAllowOrigin] == "*")
            #expect(downloaded.headers[.accessControlExposeHeaders]?.contains("Content-Disposition") == true)
            #expect(downloaded.headers[.accessControlAllowCredentials] == nil)
        }
    }

    @Test func aListedOriginIsEchoedAndOthersAreRefused() async throws {
        let harness = try ServerHarness { $0.http.cors.allowedOrigins = [Self.chat, "http://127.0.0.1:5280"] }
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            let allowed = try await self.preflight(client, "/upload/slot/photo.jpg")
            #expect(allowed.status == .noContent)
            #expect(allowed.headers[.accessControlAllowOrigin] == Self.chat)
            #expect(allowed.headers[.vary] == "Origin")
            #expect(allowed.headers[.accessControlAllowMethods] == "PUT, GET, HEAD, OPTIONS")
            let second = try await self.preflight(client, "/v1/files/token", origin: "http://127.0.0.1:5280", method: "GET")
            #expect(second.status == .noContent && second.headers[.accessControlAllowOrigin] == "http://127.0.0.1:5280")

            for origin in [Self.elsewhere, "https://chat.example.org.evil.example", "http://chat.example.org", "null"] {
                let refused = try await self.preflight(client, "/upload/slot/photo.jpg", origin: origin)
                #expect(refused.status == .forbidden, "\(origin)")
                #expect(refused.headers[.accessControlAllowOrigin] == nil)
                #expect(refused.headers[.accessControlAllowMethods] == nil)
                let error = try refused.decode(ErrorBody.self)
                #expect(error.error == "origin_not_allowed")
                #expect(error.message.contains("http.cors.allowedOrigins"))
            }

            // Answers vary by origin: a listed one gets its own origin back, another none.
            let body = Data("listed\n".utf8)
            let uri = Self.signedUpload("listed", "note.txt", body, contentType: "text/plain")
            let created = try await client.execute(
                uri: uri,
                method: .put,
                headers: [.origin: Self.chat, .contentType: "text/plain"],
                body: ByteBuffer(bytes: body)
            )
            #expect(created.status == .created && created.headers[.accessControlAllowOrigin] == Self.chat)
            let mine = try await client.execute(uri: XEP0363Tests.uri(["listed", "note.txt"]), method: .get, headers: [.origin: Self.chat])
            #expect(mine.headers[.accessControlAllowOrigin] == Self.chat && mine.headers[.vary] == "Origin")
            let theirs = try await client.execute(uri: XEP0363Tests.uri(["listed", "note.txt"]), method: .get, headers: [.origin: Self.elsewhere])
            #expect(theirs.headers[.accessControlAllowOrigin] == nil && theirs.headers[.accessControlExposeHeaders] == nil)
            #expect(theirs.headers[.vary] == "Origin")
            let missing = try await client.execute(uri: XEP0363Tests.uri(["listed", "none.txt"]), method: .get, headers: [.origin: Self.chat])
            #expect(missing.status == .notFound && missing.headers[.accessControlAllowOrigin] == Self.chat)
        }
    }

    @Test func noOriginIsAllowedWithAnEmptyList() async throws {
        let harness = try ServerHarness { $0.http.cors.allowedOrigins = [] }
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            let refused = try await self.preflight(client, "/upload/slot/photo.jpg")
            #expect(refused.status == .forbidden && refused.headers[.accessControlAllowOrigin] == nil)
            let download = try await client.execute(uri: "/v1/files/token", method: .get, headers: [.origin: Self.chat])
            #expect(download.status == .forbidden && download.headers[.accessControlAllowOrigin] == nil)
        }
    }

    @Test func theNativeAPIAndOperationsGetNoCORS() async throws {
        let harness = try ServerHarness()
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            let preflight = try await self.preflight(client, "/v1/transfers?sender=a&recipient=b&filename=f", method: "POST")
            // Refused (the API key is checked first), and with no CORS header the browser gives up too.
            #expect(preflight.status == .unauthorized)
            let created = try await client.execute(
                uri: "/v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename=a.txt",
                method: .post,
                headers: [.origin: Self.chat, .authorization: "Bearer \(ServerHarness.prosodyKey)", .contentType: "text/plain"],
                body: ByteBuffer(string: "native\n")
            )
            #expect(created.status == .created)
            let transfer = try created.decode(TransferBody.self)
            let shown = try await client.execute(
                uri: "/v1/transfers/\(transfer.id)",
                method: .get,
                headers: [.origin: Self.chat, .authorization: "Bearer \(ServerHarness.prosodyKey)"]
            )
            let refused = try await client.execute(uri: "/v1/transfers/\(transfer.id)", method: .get, headers: [.origin: Self.chat])
            #expect(refused.status == .unauthorized)
            let health = try await client.execute(uri: "/healthz", method: .get, headers: [.origin: Self.chat])
            let unknown = try await self.preflight(client, "/v1/elsewhere", method: "GET")
            for answer in [preflight, created, shown, refused, health, unknown] {
                #expect(answer.headers[.accessControlAllowOrigin] == nil)
                #expect(answer.headers[.accessControlAllowMethods] == nil)
                #expect(answer.headers[.accessControlExposeHeaders] == nil)
            }
        }
    }

    @Test func noCORSOnTheUploadPathWhileXEP0363IsOff() async throws {
        let harness = try ServerHarness { $0.xep0363.enabled = false }
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            let preflight = try await self.preflight(client, "/upload/slot/photo.jpg")
            #expect(preflight.status == .notFound && preflight.headers[.accessControlAllowOrigin] == nil)
            let download = try await self.preflight(client, "/v1/files/token", method: "GET")
            #expect(download.status == .noContent && download.headers[.accessControlAllowOrigin] == "*")
        }
    }
}
