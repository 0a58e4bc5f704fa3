import AirlockCore
import AirlockTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

@Suite("download tokens on a live server")
struct DownloadTokenTests {
    private func cleanTransfer(_ client: some TestClientProtocol) async throws -> TransferBody {
        try await client.handOff(Data("token test content\n".utf8), recipients: ["bob@example.org"]).decode(TransferBody.self)
    }

    private func token(of url: String) -> String {
        String(url.split(separator: "/").last!)
    }

    @Test func minting() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            let transfer = try await self.cleanTransfer(client)
            let minted = try await client.issueToken(transfer.id, recipient: "bob@example.org", ttlSeconds: 30)
            #expect(minted.status == .created)
            let body = try JSONSerialization.jsonObject(with: minted.bytes) as? [String: Any]
            #expect((body?["url"] as? String)?.contains("/v1/files/") == true)
            #expect(body?["expiresAt"] is String)

            #expect(try await client.issueToken(transfer.id, recipient: "mallory@example.org").status == .forbidden)
            #expect(try await client.issueToken(transfer.id, recipient: "bob@example.org", ttlSeconds: 0).status == .badRequest)
            #expect(try await client.issueToken("no-such-transfer", recipient: "bob@example.org").status == .notFound)
            #expect(try await client.issueToken(transfer.id, recipient: "bob@example.org", key: ServerHarness.ejabberdKey).status == .notFound)
            let garbage = try await client.execute(
                uri: "/v1/transfers/\(transfer.id)/tokens",
                method: .post,
                headers: [.authorization: "Bearer \(ServerHarness.prosodyKey)"],
                body: .init(string: "{not json")
            )
            #expect(garbage.status == .badRequest)
        }
    }

    @Test func tamperedWrongKeyAndAlgNoneTokensAre403() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            let transfer = try await self.cleanTransfer(client)
            let token = self.token(of: try #require(transfer.downloads?.first?.url))
            #expect(try await client.execute(uri: "/v1/files/\(token)", method: .get).status == .ok)

            // Flip one character of the payload.
            var parts = token.split(separator: ".").map(String.init)
            let payload = Array(parts[1])
            parts[1] = String(payload.dropLast()) + (payload.last == "A" ? "B" : "A")
            #expect(try await client.execute(uri: "/v1/files/\(parts.joined(separator: "."))", method: .get).status == .forbidden)
            // Signed with a key the server does not have, under the active key id.
            let wrongKey = HandCraftedToken.download(
                transferId: transfer.id,
                recipient: "bob@example.org",
                secret: Data(repeating: 7, count: 32),
                expires: harness.clock.now + 60
            )
            #expect(try await client.execute(uri: "/v1/files/\(wrongKey)", method: .get).status == .forbidden)
            // Under a key id the server does not know.
            let unknownKid = HandCraftedToken.download(
                transferId: transfer.id,
                recipient: "bob@example.org",
                secret: harness.configuration.tokens.keys["dev"]!,
                kid: "retired-long-ago",
                expires: harness.clock.now + 60
            )
            #expect(try await client.execute(uri: "/v1/files/\(unknownKid)", method: .get).status == .forbidden)
            // alg none, no signature.
            let none =
                HandCraftedToken.base64URL(Data(#"{"alg":"none","typ":"JWT","kid":"dev"}"#.utf8)) + "."
                + HandCraftedToken.base64URL(Data(#"{"tid":"\#(transfer.id)","sub":"bob@example.org","exp":9999999999,"jti":"x"}"#.utf8)) + "."
            #expect(try await client.execute(uri: "/v1/files/\(none)", method: .get).status == .forbidden)
            #expect(try await client.execute(uri: "/v1/files/not-a-token", method: .get).status == .forbidden)
            #expect(try await client.execute(uri: "/v1/files/\(String(repeating: "a", count: 5000))", method: .get).status == .forbidden)

            let metrics = String(decoding: try await client.execute(uri: "/metrics", method: .get).bytes, as: UTF8.self)
            #expect(metrics.contains("airlock_token_rejections_total 6"))
        }
    }

    @Test func aTokenForSomeoneWhoIsNotARecipientIs403() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            let transfer = try await self.cleanTransfer(client)
            let forged = HandCraftedToken.download(
                transferId: transfer.id,
                recipient: "mallory@example.org",
                secret: harness.configuration.tokens.keys["dev"]!,
                expires: harness.clock.now + 60
            )
            #expect(try await client.execute(uri: "/v1/files/\(forged)", method: .get).status == .forbidden)
            let unknownTransfer = HandCraftedToken.download(
                transferId: "00000000-0000-0000-0000-000000000000",
                recipient: "bob@example.org",
                secret: harness.configuration.tokens.keys["dev"]!,
                expires: harness.clock.now + 60
            )
            #expect(try await client.execute(uri: "/v1/files/\(unknownTransfer)", method: .get).status == .notFound)
        }
    }

    @Test func expiredTokensAre410() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            let transfer = try await self.cleanTransfer(client)
            let minted = try await client.issueToken(transfer.id, recipient: "bob@example.org", ttlSeconds: 60)
            let url = try #require((try JSONSerialization.jsonObject(with: minted.bytes) as? [String: Any])?["url"] as? String)
            #expect(try await client.download(url).status == .ok)
            harness.clock.advance(seconds: 61)
            let expired = try await client.download(url)
            #expect(expired.status == .gone)
            #expect(try expired.decode(ErrorBody.self).error == "token_expired")
        }
    }

    @Test func retiredKeysStillVerifyUntilRemoved() async throws {
        let harness = try ServerHarness()
        let transfer = try await harness.run { client in try await self.cleanTransfer(client) }
        let oldURL = try #require(transfer.downloads?.first?.url)
        // Rotate: a new active key, the old one kept as retired.
        let rotated = try ServerHarness {
            $0 = harness.configuration
            $0.tokens.keys["2026-12"] = Data(repeating: 42, count: 32)
            $0.tokens.activeKeyId = "2026-12"
        }
        try await rotated.run { client in
            #expect(try await client.download(oldURL).status == .ok)
            let fresh = try await client.issueToken(transfer.id, recipient: "bob@example.org")
            let url = try #require((try JSONSerialization.jsonObject(with: fresh.bytes) as? [String: Any])?["url"] as? String)
            var encodedHeader = String(self.token(of: url).split(separator: ".")[0])
            encodedHeader += String(repeating: "=", count: (4 - encodedHeader.count % 4) % 4)
            let header = try #require(Data(base64Encoded: encodedHeader))
            #expect(String(decoding: header, as: UTF8.self).contains(#""kid":"2026-12""#))
            #expect(try await client.download(url).status == .ok)
        }
        // Removed: the old key no longer verifies.
        let removed = try ServerHarness {
            $0 = rotated.configuration
            $0.tokens.keys["dev"] = nil
        }
        try await removed.run { client in
            let response = try await client.download(oldURL)
            #expect(response.status == .forbidden)
        }
    }

    @Test func singleUseTokensCannotBeReplayed() async throws {
        let harness = try ServerHarness { $0.tokens.singleUse = true }
        try await harness.run { client in
            let transfer = try await self.cleanTransfer(client)
            let url = try #require(transfer.downloads?.first?.url)
            // HEAD does not use the token up.
            #expect(try await client.download(url, method: .head).status == .ok)
            #expect(try await client.download(url).status == .ok)
            let replay = try await client.download(url)
            #expect(replay.status == .gone)
            #expect(try replay.decode(ErrorBody.self).message.contains("already used"))
        }
    }
}
