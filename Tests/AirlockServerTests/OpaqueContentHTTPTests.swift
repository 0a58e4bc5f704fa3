import AirlockCore
import AirlockTestSupport
import Crypto
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

/// Encrypted uploads on a live server (issue 16): random bytes are recorded as opaque, served by default and
/// quarantined under `policy.opaqueContent` `quarantine`; typed and small content stays inspected.
@Suite("opaque content on a live server")
struct OpaqueContentHTTPTests {
    struct ClassBody: Decodable {
        var id: String
        var contentClass: String
        var verdict: String
        var reason: String?
        var state: String
        var detectedType: String?
        var downloads: [TransferBody.Grant]?
    }

    /// Bytes like an OMEMO `aesgcm://` upload: AES-GCM ciphertext of a text, with its tag (a fixed key and nonce, so
    /// every run sends the same bytes).
    static func ciphertext(of plaintext: Data) throws -> Data {
        let key = SymmetricKey(data: Fixtures.randomBytes(count: 32, seed: 0x0e0e))
        let sealed = try AES.GCM.seal(plaintext, using: key, nonce: try AES.GCM.Nonce(data: Fixtures.randomBytes(count: 12, seed: 0x1212)))
        return sealed.ciphertext + sealed.tag
    }

    static let report = Data(String(repeating: "Quarterly figures, all in order. ", count: 400).utf8)

    @Test func encryptedUploadsAreOpaqueAndServedByDefault() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            // In memory (at most 64 KiB) and streamed through a staging file: both opaque, clean, downloadable.
            for size in [13_200, 300_000] {
                let plaintext = Data(String(repeating: "Quarterly figures, all in order. ", count: size / 33).utf8)
                let encrypted = try Self.ciphertext(of: plaintext)
                let created = try await client.handOff(encrypted, filename: "report.txt.enc")
                #expect(created.status == .created)
                let body = try created.decode(ClassBody.self)
                #expect(body.contentClass == "opaque", "\(encrypted.count) bytes")
                #expect(body.verdict == "clean")
                #expect(body.state == "stored")
                let url = try #require(body.downloads?.first?.url)
                #expect(try await client.download(url).bytes == encrypted)
                // The same bytes again take their verdict from the cache, and keep their class.
                #expect(try await client.handOff(encrypted, filename: "again.enc").decode(ClassBody.self).contentClass == "opaque")
            }
            // The plaintext, an image and a small random body stay inspected.
            #expect(try await client.handOff(Self.report, filename: "report.txt").decode(ClassBody.self).contentClass == "inspected")
            #expect(
                try await client.handOff(Fixtures.png, filename: "p.png", contentType: "image/png").decode(ClassBody.self).contentClass == "inspected"
            )
            #expect(try await client.handOff(Fixtures.randomBytes(count: 1000, seed: 5)).decode(ClassBody.self).contentClass == "inspected")

            let metrics = String(decoding: try await client.execute(uri: "/metrics", method: .get).bytes, as: UTF8.self)
            #expect(metrics.contains(#"airlock_content_class_total{class="opaque"} 4"#))
            #expect(metrics.contains(#"airlock_content_class_total{class="inspected"} 3"#))
        }
    }

    @Test func theQuarantinePolicyHoldsEncryptedUploads() async throws {
        let harness = try ServerHarness { $0.policy.opaqueContent = .quarantine }
        try await harness.run { client in
            let encrypted = try Self.ciphertext(of: Self.report)
            for attempt in 0..<2 {
                let body = try await client.handOff(encrypted, filename: "report.enc").decode(ClassBody.self)
                #expect(body.contentClass == "opaque", "attempt \(attempt)")
                #expect(body.verdict == "blocked")
                #expect(body.reason == "encrypted content cannot be inspected")
                #expect(body.state == "quarantined")
                #expect(body.downloads?.isEmpty ?? true)
            }
            #expect(harness.files(under: harness.filesDirectory).isEmpty)
            #expect(harness.files(under: harness.quarantineDirectory).count == 2)

            // An XEP-0363 upload of ciphertext is accepted (201) and held: its GET is 403.
            let secret = harness.configuration.xep0363.secret
            let path = "omemo-slot/photo.jpg"
            let signature = HMAC<SHA256>.authenticationCode(
                for: Data("\(path) \(encrypted.count)".utf8),
                using: SymmetricKey(data: Data(secret.utf8))
            )
            .map { String(format: "%02x", $0) }.joined()
            let put = try await client.execute(uri: "/upload/\(path)?v=\(signature)", method: .put, body: ByteBuffer(bytes: encrypted))
            #expect(put.status == .created)
            #expect(try await client.execute(uri: "/upload/\(path)", method: .get).status == .forbidden)

            // Inspected content is served as ever.
            let plain = try await client.handOff(Self.report, filename: "report.txt").decode(ClassBody.self)
            #expect(plain.contentClass == "inspected")
            #expect(plain.state == "stored")
        }
    }
}
