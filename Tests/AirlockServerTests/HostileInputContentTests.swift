import AirlockCore
import AirlockTestSupport
import Crypto
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

/// Hostile content (archives, polyglots, empty files) and hostile download tokens.
@Suite("hostile input: content and tokens", .serialized)
struct HostileInputContentTests {
    /// Archive and scan limits small enough for test-sized bombs.
    static func smallLimits(_ configuration: inout AirlockConfiguration) {
        configuration.scanner.maxFileSize = 4 << 20
        configuration.scanner.maxScanSize = 8 << 20
        configuration.scanner.maxRecursion = 4
        configuration.scanner.maxFiles = 20
    }

    /// Hands off `content` and checks the verdict is one of `verdicts` (never clean), quarantined, with no link.
    static func expectQuarantined(
        _ client: any TestClientProtocol,
        _ content: Data,
        filename: String,
        contentType: String = "application/octet-stream",
        verdicts: Set<String>,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let response = try await Hostile.handOff(client, content, filename: filename, contentType: contentType)
        #expect(response.status == .created, sourceLocation: sourceLocation)
        let transfer = try response.decode(TransferBody.self)
        #expect(
            verdicts.contains(transfer.verdict),
            "\(transfer.verdict) \(transfer.reason ?? transfer.signature ?? "")",
            sourceLocation: sourceLocation
        )
        #expect(transfer.state == "quarantined", sourceLocation: sourceLocation)
        #expect(transfer.downloads?.isEmpty != false, sourceLocation: sourceLocation)
    }

    /// Builds files with `zip`/`tar` on a dispatch queue, off the cooperative threads.
    static func build(_ work: @escaping @Sendable (TemporaryDirectory) throws -> String) async throws -> Data {
        let directory = try TemporaryDirectory()
        return try await Blocking.run {
            try Data(contentsOf: URL(fileURLWithPath: try work(directory)))
        }
    }

    @Test func aZipBombIsUnscannable() async throws {
        let bomb = try await Self.build { directory in
            try directory.writeZeros("zeros.bin", count: 16 << 20)
            return try directory.zip("bomb.zip", members: ["zeros.bin"])
        }
        #expect(bomb.count < 1 << 20)
        try await Hostile.underAttack(Self.smallLimits) { client, _, _ in
            try await Self.expectQuarantined(client, bomb, filename: "bomb.zip", contentType: "application/zip", verdicts: ["unscannable"])
        }
    }

    @Test func aZipWithMoreMembersThanMaxFilesIsUnscannable() async throws {
        let archive = try await Self.build { directory in
            let members = try (0..<30).map { index in
                try directory.write("m\(index).txt", Data("member \(index)\n".utf8))
                return "m\(index).txt"
            }
            return try directory.zip("many.zip", members: members)
        }
        try await Hostile.underAttack(Self.smallLimits) { client, _, _ in
            try await Self.expectQuarantined(client, archive, filename: "many.zip", contentType: "application/zip", verdicts: ["unscannable"])
        }
    }

    @Test func aZipThatUnderstatesItsSizesIsUnscannable() async throws {
        let archive = try await Self.build { directory in
            try directory.writeZeros("big.bin", count: 6 << 20)
            try directory.zip("liar.zip", members: ["big.bin"])
            try directory.understateZipSizes("liar.zip", declaredSize: 1000)
            return directory.file("liar.zip")
        }
        try await Hostile.underAttack(Self.smallLimits) { client, _, _ in
            try await Self.expectQuarantined(client, archive, filename: "liar.zip", contentType: "application/zip", verdicts: ["unscannable"])
        }
    }

    @Test func anEncryptedZipIsUnscannable() async throws {
        let archive = try await Self.build { directory in
            try directory.write("secret.txt", Data("nothing to see here\n".utf8))
            return try directory.zip("secret.zip", members: ["secret.txt"], password: "hunter2")
        }
        try await Hostile.underAttack { client, _, _ in
            try await Self.expectQuarantined(client, archive, filename: "secret.zip", contentType: "application/zip", verdicts: ["unscannable"])
        }
    }

    /// Archives nested deeper than `scanner.maxRecursion`: the innermost layer is never inspected, so never clean,
    /// whether it holds a harmless file or EICAR.
    @Test(arguments: [false, true])
    func archivesNestedDeeperThanMaxRecursionAreNotClean(eicarInside: Bool) async throws {
        let archive = try await Self.build { directory in
            try directory.write("inner.txt", eicarInside ? Fixtures.eicar : Data("harmless\n".utf8))
            var member = "inner.txt"
            for level in 1...7 {
                member = URL(fileURLWithPath: try directory.zip("level\(level).zip", members: [member])).lastPathComponent
            }
            return directory.file(member)
        }
        try await Hostile.underAttack(Self.smallLimits) { client, _, _ in
            try await Self.expectQuarantined(
                client,
                archive,
                filename: "nested.zip",
                contentType: "application/zip",
                verdicts: eicarInside ? ["infected", "unscannable"] : ["unscannable"]
            )
        }
    }

    @Test func eicarInsideATarGzIsInfected() async throws {
        let archive = try await Self.build { directory in
            try directory.write("docs/readme.txt", Fixtures.eicar)
            return try directory.tarGzip("docs.tar.gz", members: ["docs"])
        }
        try await Hostile.underAttack { client, _, _ in
            try await Self.expectQuarantined(client, archive, filename: "docs.tar.gz", contentType: "application/gzip", verdicts: ["infected"])
        }
    }

    /// A valid PNG with a zip appended whose member holds EICAR compressed (the raw bytes never contain it),
    /// declared as an image: libclamav finds the embedded archive.
    @Test func aPNGZipPolyglotWithEICARInsideIsInfected() async throws {
        let polyglot = try await Self.build { directory in
            let padding = Data(repeating: UInt8(ascii: "A"), count: 4000)
            try directory.write("e.txt", padding + Fixtures.eicar + padding)
            let zip = try Data(contentsOf: URL(fileURLWithPath: try directory.zip("e.zip", members: ["e.txt"])))
            return try directory.write("polyglot.png", Fixtures.png + zip)
        }
        #expect(polyglot.range(of: Fixtures.eicar) == nil)
        try await Hostile.underAttack { client, _, _ in
            try await Self.expectQuarantined(client, polyglot, filename: "cat.png", contentType: "image/png", verdicts: ["infected"])
        }
    }

    /// A PNG header followed by ClamAV's test executable: found behind the image header.
    @Test func aPNGHeaderFollowedByAnExecutableIsInfected() async throws {
        let executable = try Data(contentsOf: URL(fileURLWithPath: Fixtures.clamAVTestFiles + "/clam.exe"))
        try await Hostile.underAttack { client, _, _ in
            try await Self.expectQuarantined(
                client,
                Fixtures.png + executable,
                filename: "photo.png",
                contentType: "image/png",
                verdicts: ["infected"]
            )
        }
    }

    /// An executable with a PNG appended, declared as an image: the detected type decides, not the declaration.
    @Test func anExecutableDeclaredAsAnImageIsBlocked() async throws {
        try await Hostile.underAttack { client, _, _ in
            try await Self.expectQuarantined(
                client,
                Fixtures.portableExecutable + Fixtures.png,
                filename: "photo.png",
                contentType: "image/png",
                verdicts: ["blocked"]
            )
        }
    }

    /// Zero-byte files through both upload paths: recorded with the empty file's SHA-256, served as zero bytes;
    /// a range of an empty file is 416.
    @Test func zeroByteFiles() async throws {
        try await Hostile.underAttack { client, _, _ in
            let response = try await Hostile.handOff(client, Data(), filename: "empty.txt", contentType: "text/plain")
            #expect(response.status == .created)
            let transfer = try response.decode(TransferBody.self)
            #expect(transfer.size == 0)
            #expect(transfer.sha256 == Hostile.sha256(Data()))
            if transfer.verdict == "clean" {
                let url = try #require(transfer.downloads?.first?.url)
                let download = try await Hostile.download(client, url)
                #expect(download.status == .ok)
                #expect(download.bytes.isEmpty)
                #expect(download.headers[.contentLength] == "0")
                #expect(try await Hostile.download(client, url, headers: [.range: "bytes=0-0"]).status == .rangeNotSatisfiable)
            }

            let v = XEP0363Tests.hmac("empty-slot/empty.bin 0")
            let put = try await client.execute(
                uri: XEP0363Tests.uri(["empty-slot", "empty.bin"], query: "v=\(v)"),
                method: .put,
                headers: [.connection: "close", .contentLength: "0"]
            )
            #expect(put.status == .created)
            let get = try await client.execute(uri: XEP0363Tests.uri(["empty-slot", "empty.bin"]), method: .get, headers: [.connection: "close"])
            #expect([200, 403].contains(get.status.code))
            #expect(get.bytes.isEmpty)
        }
    }

    // MARK: Tokens

    private static func token(of url: String) -> String {
        String(url.split(separator: "/").last ?? "")
    }

    /// Download tokens an attacker would try: each refused with the documented status and the JSON body.
    enum ForgedToken: String, CaseIterable, Sendable {
        case wrongKey, algNone, hs512WithTheRightKey, otherRecipient, strippedSignature, fourSegments, swappedPayload, kidTraversal,
            sqlInjectionInTransferId
    }

    @Test(arguments: ForgedToken.allCases)
    func forgedTokensAreRefused(_ kind: ForgedToken) async throws {
        try await Hostile.underAttack { client, _, harness in
            let transfer = try await Hostile.handOff(client, Data("forge me\n".utf8), filename: "f.txt").decode(TransferBody.self)
            let other = try await Hostile.handOff(client, Data("another\n".utf8), filename: "g.txt").decode(TransferBody.self)
            let genuine = Self.token(of: try #require(transfer.downloads?.first?.url))
            let secret = try #require(harness.configuration.tokens.keys["dev"])
            let expires = Int(harness.clock.now.timeIntervalSince1970) + 600
            let claims: [String: Any] = ["tid": transfer.id, "sub": "bob@example.org", "exp": expires, "jti": UUID().uuidString]
            let forged: String
            var expected: HTTPResponse.Status = .forbidden
            switch kind {
            case .wrongKey:
                forged = HandCraftedToken.make(
                    header: ["alg": "HS256", "typ": "JWT", "kid": "dev"],
                    claims: claims,
                    secret: Data(repeating: 9, count: 32)
                )
            case .algNone:
                forged =
                    HandCraftedToken.base64URL(Data(#"{"alg":"none","typ":"JWT","kid":"dev"}"#.utf8)) + "."
                    + HandCraftedToken.base64URL(try JSONSerialization.data(withJSONObject: claims)) + "."
            case .hs512WithTheRightKey:
                let head = HandCraftedToken.base64URL(Data(#"{"alg":"HS512","typ":"JWT","kid":"dev"}"#.utf8))
                let body = HandCraftedToken.base64URL(try JSONSerialization.data(withJSONObject: claims))
                let signature = HMAC<SHA512>.authenticationCode(for: Data("\(head).\(body)".utf8), using: SymmetricKey(data: secret))
                forged = "\(head).\(body).\(HandCraftedToken.base64URL(Data(signature)))"
            case .otherRecipient:
                var changed = claims
                changed["sub"] = "mallory@example.org"
                forged = HandCraftedToken.make(header: ["alg": "HS256", "typ": "JWT", "kid": "dev"], claims: changed, secret: secret)
            case .strippedSignature:
                forged = genuine.split(separator: ".").prefix(2).joined(separator: ".") + "."
            case .fourSegments:
                forged = genuine + "." + genuine.split(separator: ".")[2]
            case .swappedPayload:
                // The genuine header and signature around the payload of a token for another transfer.
                let otherToken = Self.token(of: try #require(other.downloads?.first?.url)).split(separator: ".")
                let parts = genuine.split(separator: ".")
                forged = "\(parts[0]).\(otherToken[1]).\(parts[2])"
            case .kidTraversal:
                forged = HandCraftedToken.make(
                    header: ["alg": "HS256", "typ": "JWT", "kid": "../../../etc/passwd"],
                    claims: claims,
                    secret: secret
                )
            case .sqlInjectionInTransferId:
                var changed = claims
                changed["tid"] = "' OR '1'='1' --"
                forged = HandCraftedToken.make(header: ["alg": "HS256", "typ": "JWT", "kid": "dev"], claims: changed, secret: secret)
                expected = .notFound
            }
            let response = try await client.execute(uri: "/v1/files/\(forged)", method: .get, headers: [.connection: "close"])
            Hostile.expectJSONError(response, expected)
            #expect(!response.bytes.contains(Data("forge me".utf8)))
            #expect(try await Hostile.download(client, "/v1/files/\(genuine)").status == .ok)
        }
    }

    @Test func expiredTokensAre410() async throws {
        try await Hostile.underAttack { client, _, harness in
            let transfer = try await Hostile.handOff(client, Data("expiring\n".utf8), filename: "e.txt").decode(TransferBody.self)
            let minted = try await client.issueToken(transfer.id, recipient: "bob@example.org", ttlSeconds: 5)
            let url = try #require((try JSONSerialization.jsonObject(with: minted.bytes) as? [String: Any])?["url"] as? String)
            harness.clock.advance(seconds: 6)
            Hostile.expectJSONError(try await Hostile.download(client, url), .gone, code: "token_expired")
            // The same claims re-signed by an attacker without the key, with a later expiry, are forged: 403.
            var parts = Self.token(of: url).split(separator: ".").map(String.init)
            let extended = #"{"tid":"\#(transfer.id)","sub":"bob@example.org","exp":9999999999,"jti":"x"}"#
            parts[1] = HandCraftedToken.base64URL(Data(extended.utf8))
            Hostile.expectJSONError(try await Hostile.download(client, "/v1/files/" + parts.joined(separator: ".")), .forbidden)
        }
    }

    @Test func replayedSingleUseTokensAre410() async throws {
        try await Hostile.underAttack({ $0.tokens.singleUse = true }) { client, _, _ in
            let transfer = try await Hostile.handOff(client, Data("once\n".utf8), filename: "o.txt").decode(TransferBody.self)
            let url = try #require(transfer.downloads?.first?.url)
            #expect(try await Hostile.download(client, url).status == .ok)
            // Replayed one after another and concurrently: never served again.
            Hostile.expectJSONError(try await Hostile.download(client, url), .gone)
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<8 {
                    group.addTask { try await Hostile.download(client, url).status.code }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses.allSatisfy { $0 == 410 }, "\(statuses)")
        }
    }

    /// A token of one megabyte: refused (by size, before any parsing) or the request line refused, never a 5xx.
    @Test func aOneMegabyteTokenIsRefused() async throws {
        try await Hostile.underAttack { _, port, _ in
            let payload = HandCraftedToken.base64URL(Data(repeating: 0x41, count: 768 * 1024))
            let token = "eyJhbGciOiJIUzI1NiJ9.\(payload).c2lnbmF0dXJl"
            #expect(token.utf8.count > 1_000_000)
            let reply = try await RawHTTP.converse(
                port: port,
                parts: [Hostile.raw(["GET /v1/files/\(token) HTTP/1.1", "Host: 127.0.0.1", "Connection: close"])]
            )
            #expect(reply.statuses.allSatisfy { $0 < 500 }, "\(reply.statuses)")
            #expect(reply.status.map { (400..<500).contains($0) } ?? reply.closedByServer)
            if reply.status == 403 {
                Hostile.expectJSONError(reply, 403, code: "invalid_token")
            }
        }
    }
}
