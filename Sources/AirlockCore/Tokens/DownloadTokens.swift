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
        // The key id selects the key; JWTKit would fall back to another key for an unknown id, so refuse it here.
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

    /// The `kid` of a compact JWT's header, if it has one.
    private static func keyId(of token: String) -> String? {
        guard let header = token.split(separator: ".", maxSplits: 1).first, header.utf8.count <= 256 else { return nil }
        var base64 = header.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.utf8.count % 4) % 4)
        struct Header: Decodable { var kid: String? }
        guard let data = Data(base64Encoded: base64) else { return nil }
        return (try? JSONDecoder().decode(Header.self, from: data))?.kid
    }
}
