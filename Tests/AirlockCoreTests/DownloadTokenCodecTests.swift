import Crypto
import Foundation
import Testing

@testable import AirlockCore

/// The pieces of the download-token fast path, each against an independent implementation.
@Suite("download token codec")
struct DownloadTokenCodecTests {
    @Test(arguments: [0, 1, 31, 32, 64, 65, 200])
    func precomputedHMACEqualsCryptoHMAC(keyLength: Int) {
        let key = (0..<keyLength).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        let mac = PrecomputedHMAC(key: key)
        for length in [0, 1, 55, 56, 64, 300, 1000] {
            let message = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 13) }
            let expected = Array(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key)))
            // Twice: the precomputed states must not be consumed by a verification.
            for _ in 0..<2 {
                let code = message.withUnsafeBytes { Array(mac.code(for: $0)) }
                #expect(code == expected, "key \(keyLength) bytes, message \(length) bytes")
                #expect(message.withUnsafeBytes { mac.isValid(expected, for: $0) })
            }
            var wrong = expected
            wrong[31] ^= 1
            #expect(!message.withUnsafeBytes { mac.isValid(wrong, for: $0) })
            #expect(!message.withUnsafeBytes { mac.isValid(Array(expected.prefix(31)), for: $0) })
        }
    }

    @Test func base64URLRoundTripsAndMatchesFoundation() {
        for length in 0..<70 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 97 &+ 5) }
            let encoded = Base64URL.encode(bytes)
            let foundation = Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
            #expect(encoded == foundation)
            #expect(Array(encoded.utf8).withUnsafeBufferPointer { Base64URL.decode($0) } == bytes)
        }
    }

    @Test(arguments: ["a", "ab=", "a+b/", "AB C", "QQ", "QR"])
    func base64URLRefusesWhatItWouldNotWrite(_ text: String) {
        // "QQ" is canonical ("A"); "QR" has non-zero leftover bits.
        let decoded = Array(text.utf8).withUnsafeBufferPointer { Base64URL.decode($0) }
        if text == "QQ" {
            #expect(decoded == [0x41])
        } else {
            #expect(decoded == nil)
        }
    }

    @Test func flatJSONReadsWhatJSONSerializationWrites() throws {
        let object: [String: Any] = [
            "exp": 1_790_000_000, "jti": "5D1C", "sub": "bob@example.org/\"quoted\" \\ ünïcødé 😀\n\t\u{01}",
            "tid": "",
        ]
        let data = try JSONSerialization.data(withJSONObject: object, options: .sortedKeys)
        let fields = try #require(FlatJSON.parse(Array(data)))
        #expect(fields["exp"] == .integer(1_790_000_000))
        #expect(fields["sub"] == .string(object["sub"] as! String))
        #expect(fields["tid"] == .string(""))
        #expect(fields.count == 4)
        #expect(FlatJSON.parse(Array(#"{"s":"\ud83d\ude00","e":-5}"#.utf8)) == ["s": .string("😀"), "e": .integer(-5)])
    }

    @Test(arguments: [
        "", "{", "[]", #"{"a":1,}"#, #"{"a":1}x"#, #"{"a":{"b":1}}"#, #"{"a":1.5}"#, #"{"a":true}"#, #"{"a":"x","a":"y"}"#,
        #"{"a":"\x"}"#, #"{"a":"\ud83d"}"#, "{\"a\":\"\u{01}\"}", #"{"a":1234567890123456789012}"#, #"{a:1}"#,
    ])
    func flatJSONRefusesAnythingElse(_ text: String) {
        #expect(FlatJSON.parse(Array(text.utf8)) == nil)
    }

    @Test func issuedTokensVerifyAndTamperedOnesDoNot() async throws {
        var configuration = AirlockConfiguration.development.tokens
        configuration.keys = ["old": Data(repeating: 1, count: 32), "new": Data(repeating: 2, count: 32)]
        configuration.activeKeyId = "new"
        let tokens = DownloadTokens(configuration)
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let (token, claims) = try tokens.issue(transferId: "t-1", recipient: "bob@example.org", ttl: 60, now: now)
        #expect(try tokens.verify(token, now: now) == claims)
        #expect(throws: DownloadTokenError.expired) { try tokens.verify(token, now: now + 60) }
        // Every single-character change is refused.
        var bytes = Array(token.utf8)
        for index in bytes.indices {
            let original = bytes[index]
            bytes[index] = original == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
            let tampered = String(decoding: bytes, as: UTF8.self)
            #expect(throws: DownloadTokenError.invalid) { try tokens.verify(tampered, now: now) }
            bytes[index] = original
        }
        // A token from the retired key still verifies while that key is configured, and not once it is removed.
        var retired = configuration
        retired.activeKeyId = "old"
        let (oldToken, _) = try DownloadTokens(retired).issue(transferId: "t-2", recipient: "bob@example.org", ttl: 60, now: now)
        #expect(try tokens.verify(oldToken, now: now).tid == "t-2")
        configuration.keys["old"] = nil
        let withoutOldKey = DownloadTokens(configuration)
        #expect(throws: DownloadTokenError.invalid) { try withoutOldKey.verify(oldToken, now: now) }
    }
}
