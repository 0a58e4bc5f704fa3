import AirlockCore
import AirlockTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import Testing

/// What issue 16 asks of web clients, in a real browser: a page served from one loopback origin uploads to Airlock's
/// XEP-0363 URLs on another origin with `fetch()` and downloads the bytes back, in headless Chromium; and the browser
/// refuses a page whose origin is outside `http.cors.allowedOrigins`. The calls and their URLs are made here, the
/// HMACs and JWTs computed from DESIGN §3's formulas (as in ``XEP0363Tests``), and the bytes checked here.
///
/// `.enabled(if:)` leaves the suite out only where chromium is missing and not required (plain `swift test`);
/// `scripts/test` and CI require it, and each test then fails without it. One browser at a time (`.serialized`).
@Suite("CORS in a real browser (headless Chromium)", .serialized, .enabled(if: HeadlessChromium.isAvailable))
struct BrowserCORSTests {
    /// Every byte value, so that nothing in the round trip may treat the body as text.
    static let sample = Data((0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 / 256) })

    /// The page's `PUT` of ``sample`` to `slot/sample.bin` on `airlock`, signed in the URL with v2's HMAC (as
    /// `mod_http_upload_external` does): a preflight for PUT with Content-Type.
    static func putSample(_ name: String, _ airlock: String, slot: String) -> WebClientOrigin.Call {
        let type = "application/octet-stream"
        let url = airlock + CORSTests.signedUpload(slot, "sample.bin", Self.sample, contentType: type)
        return .init(name, "PUT", url, headers: ["Content-Type": type], body: Self.sample)
    }

    /// The page's `GET` of `slot/filename` on `airlock`.
    static func get(_ name: String, _ airlock: String, slot: String, filename: String = "sample.bin") -> WebClientOrigin.Call {
        .init(name, "GET", airlock + XEP0363Tests.uri([slot, filename]))
    }

    /// A Prosody `mod_http_file_share` JWT for `slot/filename`.
    static func fileShareToken(_ harness: ServerHarness, slot: String, filename: String, size: Int, type: String) -> String {
        let now = Int(harness.clock.now.timeIntervalSince1970)
        return HandCraftedToken.make(
            header: ["alg": "HS256", "typ": "JWT"],
            claims: [
                "slot": slot, "filename": filename, "filesize": size, "filetype": type, "iat": now, "exp": now + 300,
                "sub": "romeo@montague.example", "expires": now + 86400,
            ],
            secret: Data(XEP0363Tests.secret.utf8)
        )
    }

    @Test func aPageOnAnotherOriginUploadsAndDownloadsItsFileBack() async throws {
        guard HeadlessChromium.executable != nil else { throw HeadlessChromium.Unavailable() }
        let web = WebClientOrigin()
        let harness = try ServerHarness()
        try await web.serve { origin in
            try await harness.run { (client: any TestClientProtocol) async throws -> Void in
                let airlock = "http://127.0.0.1:\(try #require(client.port))"
                #expect(airlock != origin)
                let note = Data("written in the browser\n".utf8)
                let token = Self.fileShareToken(harness, slot: "browser-jwt", filename: "note.txt", size: note.count, type: "text/plain")
                let outcomes = try await web.visit(
                    origin: origin,
                    making: [
                        Self.putSample("put-hmac", airlock, slot: "browser-v2"),
                        Self.get("get-hmac", airlock, slot: "browser-v2"),
                        // Prosody's JWT in Authorization: the preflight must allow that header.
                        .init(
                            "put-jwt",
                            "PUT",
                            airlock + XEP0363Tests.uri(["browser-jwt", "note.txt"]),
                            headers: ["Authorization": "Bearer \(token)", "Content-Type": "text/plain"],
                            body: note
                        ),
                        Self.get("get-jwt", airlock, slot: "browser-jwt", filename: "note.txt"),
                        // Error answers are readable too.
                        Self.putSample("put-again", airlock, slot: "browser-v2"),
                        Self.get("get-missing", airlock, slot: "browser-v2", filename: "missing.bin"),
                    ]
                )
                #expect(outcomes.count == 6)
                for (name, outcome) in outcomes.sorted(by: { $0.key < $1.key }) {
                    #expect(outcome.rejected == nil, "\(name) was refused by the browser: \(outcome.rejected ?? "")")
                }
                #expect(outcomes["put-hmac"]?.status == 201)
                #expect(outcomes["get-hmac"]?.status == 200)
                #expect(outcomes["get-hmac"]?.bytes == Self.sample)
                #expect(outcomes["get-hmac"]?.contentDisposition?.hasPrefix("attachment; filename*=UTF-8''sample.bin") == true)
                #expect(outcomes["put-jwt"]?.status == 201)
                #expect(outcomes["get-jwt"]?.bytes == note)
                #expect(outcomes["get-jwt"]?.contentDisposition?.hasPrefix("inline; filename*=UTF-8''note.txt") == true)
                #expect(outcomes["put-again"]?.status == 409)
                #expect(outcomes["get-missing"]?.status == 404)
                let error = try outcomes["get-missing"]?.bytes.map { try JSONDecoder().decode(ErrorBody.self, from: $0) }
                #expect(error?.error == "not_found")

                // What the browser stored is what Airlock serves to anyone.
                let stored = try await client.execute(uri: XEP0363Tests.uri(["browser-v2", "sample.bin"]), method: .get)
                #expect(stored.bytes == Self.sample)
            }
        }
    }

    @Test func theBrowserRefusesAPageFromAnOriginOutsideTheList() async throws {
        guard HeadlessChromium.executable != nil else { throw HeadlessChromium.Unavailable() }
        let listed = WebClientOrigin()
        let other = WebClientOrigin()
        try await listed.serve { listedOrigin in
            try await other.serve { otherOrigin in
                let harness = try ServerHarness { $0.http.cors.allowedOrigins = [listedOrigin] }
                try await harness.run { (client: any TestClientProtocol) async throws -> Void in
                    let airlock = "http://127.0.0.1:\(try #require(client.port))"
                    let allowed = try await listed.visit(
                        origin: listedOrigin,
                        making: [Self.putSample("put", airlock, slot: "listed"), Self.get("get", airlock, slot: "listed")]
                    )
                    #expect(allowed["put"]?.rejected == nil && allowed["put"]?.status == 201)
                    #expect(allowed["get"]?.rejected == nil && allowed["get"]?.bytes == Self.sample)

                    let refused = try await other.visit(
                        origin: otherOrigin,
                        making: [Self.putSample("put", airlock, slot: "other"), Self.get("get", airlock, slot: "listed")]
                    )
                    // fetch() rejects (a TypeError), and the page never sees a status or a byte.
                    for name in ["put", "get"] {
                        #expect(refused[name]?.rejected?.contains("TypeError") == true, "\(name): \(String(describing: refused[name]))")
                        #expect(refused[name]?.status == nil && refused[name]?.bytes == nil)
                    }
                    // The refused preflight kept the PUT from being sent at all.
                    let nothing = try await client.execute(uri: XEP0363Tests.uri(["other", "sample.bin"]), method: .get)
                    #expect(nothing.status == .notFound)
                }
            }
        }
    }
}
