import AirlockCore
import Foundation
import Testing

@Suite("download tokens")
struct DownloadTokensTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    /// Found by FuzzDownloadToken: the raw signature check decoded leniently, so a padded (`=`), standard-alphabet
    /// (`+`, `/`) or stray-low-bit spelling of a valid signature was also accepted. A token has one spelling.
    @Test func onlyTheCanonicalSpellingOfASignatureVerifies() async throws {
        let tokens = DownloadTokens(AirlockConfiguration.development.tokens)
        let (token, claims) = try tokens.issue(transferId: "t1", recipient: "bob@example.org", ttl: 60, now: self.now)
        #expect(try tokens.verify(token, now: self.now) == claims)

        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        var respelled = Array(token)
        let last = respelled.count - 1
        respelled[last] = alphabet[alphabet.firstIndex(of: respelled[last])! ^ 1]
        let standardAlphabet = token.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        var variants = [token + "=", String(respelled)]
        if standardAlphabet != token {
            variants.append(standardAlphabet)
        }
        for variant in variants {
            #expect(throws: DownloadTokenError.invalid) { try tokens.verify(variant, now: self.now) }
        }
    }
}
