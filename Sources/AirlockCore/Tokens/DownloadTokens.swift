import Crypto
public import Foundation
public import JWTKit

/// The claims of a download token: bound to one transfer and one recipient, expiring.
public struct DownloadTokenClaims: JWTPayload, Equatable {
    /// The transfer id.
    public var tid: String
    /// The recipient.
    public var sub: SubjectClaim
    /// Expiry.
    public var exp: ExpirationClaim
    /// Unique token id (for single use and the issuance record).
    public var jti: IDClaim

    /// Expiry is checked by the caller against its own clock, so an expired token can answer 410 rather than 403.
    public func verify(using algorithm: some JWTAlgorithm) throws {}
}

/// Why a token was refused.
public enum DownloadTokenError: Error, Equatable {
    /// Signature, key id, algorithm or format is wrong: 403.
    case invalid
    /// Expired: 410.
    case expired
}

/// Mints and verifies download tokens: JWT HS256 signed with `tokens.keys[activeKeyId]`, with the key id in the
/// header so retired keys still verify until removed from the configuration.
public struct DownloadTokens: Sendable {
    private let keys: JWTKeyCollection
    private let keyIds: Set<String>
    private let rawKeys: [SymmetricKey]
    /// The id of the key that signs new tokens.
    public let activeKeyId: String

    /// Loads the configured keys.
    public init(_ configuration: AirlockConfiguration.Tokens) async {
        let keys = JWTKeyCollection()
        for (id, secret) in configuration.keys.sorted(by: { $0.key < $1.key }) {
            await keys.add(hmac: HMACKey(key: SymmetricKey(data: secret)), digestAlgorithm: .sha256, kid: JWKIdentifier(string: id))
        }
        self.keys = keys
        self.keyIds = Set(configuration.keys.keys)
        self.rawKeys = configuration.keys.values.map { SymmetricKey(data: $0) }
        self.activeKeyId = configuration.activeKeyId
    }

    /// Mints a token for `recipient` of `transferId`, valid for `ttl` seconds from `now`.
    public func issue(transferId: String, recipient: String, ttl: Int, now: Date) async throws -> (token: String, claims: DownloadTokenClaims) {
        let claims = DownloadTokenClaims(
            tid: transferId,
            sub: SubjectClaim(value: recipient),
            exp: ExpirationClaim(value: Date(timeIntervalSince1970: (now.timeIntervalSince1970 + Double(ttl)).rounded(.down))),
            jti: IDClaim(value: UUID().uuidString)
        )
        let token = try await self.keys.sign(claims, kid: JWKIdentifier(string: self.activeKeyId))
        return (token, claims)
    }

    /// Verifies the signature (by key id), then the expiry against `now`.
    public func verify(_ token: String, now: Date) async throws(DownloadTokenError) -> DownloadTokenClaims {
        // A download token is small; anything much larger is not one of ours and is not worth parsing.
        guard token.utf8.count <= 1024 else { throw .invalid }
        // The signature is checked before anything in the token is parsed (DESIGN §3)...
        guard self.hasValidSignature(token) else { throw .invalid }
        // ...then the key id, which selects the key: JWTKit would fall back to another key for an unknown id.
        guard let keyId = Self.keyId(of: token), self.keyIds.contains(keyId) else { throw .invalid }
        let claims: DownloadTokenClaims
        do {
            claims = try await self.keys.verify(token, as: DownloadTokenClaims.self)
        } catch {
            throw .invalid
        }
        guard claims.exp.value > now else { throw .expired }
        return claims
    }

    /// Whether the compact JWT's signature is an HMAC-SHA256 of its signing input under one of the configured keys,
    /// checked on the raw bytes, in constant time per key.
    private func hasValidSignature(_ token: String) -> Bool {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let signature = Self.base64URLDecode(parts[2]), signature.count == 32 else { return false }
        // One spelling per token: no padding, no `+`/`/`, no stray low bits (found by FuzzDownloadToken).
        guard Self.base64URLEncode(signature) == parts[2] else { return false }
        let signingInput = Data(token.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count))
        var valid = false
        for key in self.rawKeys where HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signingInput, using: key) {
            valid = true
        }
        return valid
    }

    private static func base64URLEncode(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    private static func base64URLDecode(_ text: Substring) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.utf8.count % 4) % 4)
        return Data(base64Encoded: base64)
    }

    /// The `kid` of a compact JWT's header, if it has one.
    private static func keyId(of token: String) -> String? {
        guard let header = token.split(separator: ".", maxSplits: 1).first, header.utf8.count <= 256 else { return nil }
        struct Header: Decodable { var kid: String? }
        guard let data = Self.base64URLDecode(header) else { return nil }
        return (try? JSONDecoder().decode(Header.self, from: data))?.kid
    }
}
