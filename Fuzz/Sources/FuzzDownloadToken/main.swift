// Fuzzes DownloadTokens.verify (DESIGN §3: the signature is checked before anything in the token is parsed).
//
// The first byte picks a mode:
//   0: the rest is a token, as a recipient would present it. Accepted only if it carries a canonical HMAC-SHA256
//      of its signing input under the configured key its `kid` names, and has not expired.
//   1: the rest is `header JSON \n payload JSON`; the harness encodes and signs them with the key picked by the
//      next byte (k1, k2 or an unconfigured key), so the parser behind the signature check is reached.
//      Accepted only if signed with a configured key that the header's `kid` names.
//   2: the rest is a raw signing input that the harness signs as in mode 1, without encoding it.
//   3: `transfer id \n recipient`, minted with `issue` and verified: the claims come back equal, and the token
//      expires exactly at its expiry.
import AirlockCore
import Crypto
import Foundation
import FuzzSupport
import JWTKit

let keys: [String: SymmetricKey] = [
    "k1": SymmetricKey(data: [UInt8](repeating: 0x11, count: 32)),
    "k2": SymmetricKey(data: [UInt8](repeating: 0x22, count: 48)),
]
let unconfiguredKey = SymmetricKey(data: [UInt8](repeating: 0x33, count: 32))
let now = Date(timeIntervalSince1970: 1_800_000_000)

let tokens: DownloadTokens = {
    let json = """
        {"tokens": {"activeKeyId": "k1", "keys": {"k1": "\(Data(repeating: 0x11, count: 32).base64EncodedString())",
                                                  "k2": "\(Data(repeating: 0x22, count: 48).base64EncodedString())"}},
         "storage": {"quarantineKey": "\(Data(repeating: 0x44, count: 32).base64EncodedString())"},
         "servers": {"fuzz": {"apiKey": "fuzz-api-key-0123456789"}}}
        """
    do {
        let configuration = try AirlockConfiguration.parse(Data(json.utf8), fileName: "fuzz", environment: [:])
        return DownloadTokens(configuration.tokens)
    } catch {
        fatalError("the fuzz configuration is invalid: \(error)")
    }
}()

func verify(_ token: String, at date: Date = now) -> Result<DownloadTokenClaims, DownloadTokenError> {
    do throws(DownloadTokenError) {
        return .success(try tokens.verify(token, now: date))
    } catch {
        return .failure(error)
    }
}

func sign(_ signingInput: String, with key: SymmetricKey) -> String {
    signingInput + "." + Base64URL.encode(HMAC<SHA256>.authenticationCode(for: Data(signingInput.utf8), using: key))
}

/// The `kid` of a token's header, read independently of the product's code (strict base64url, JSONSerialization).
func keyId(of token: String) -> String? {
    guard let header = token.split(separator: ".", omittingEmptySubsequences: false).first,
        let data = Base64URL.decodeStrictly(header),
        let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
    else { return nil }
    return object["kid"] as? String
}

/// Checks what an accepted token must be: three canonical base64url parts, a `kid` naming a configured key, and
/// that key's HMAC of the signing input as signature.
func checkAccepted(_ token: String, _ claims: DownloadTokenClaims) {
    let parts = token.split(separator: ".", omittingEmptySubsequences: false)
    invariant(parts.count == 3, "accepted a token with \(parts.count) parts: \(token.debugDescription)")
    invariant(claims.exp > now, "accepted an expired token: \(token.debugDescription)")
    guard let kid = keyId(of: token), let key = keys[kid] else {
        invariant(false, "accepted a token whose header names no configured key: \(token.debugDescription)")
        return
    }
    guard let signature = Base64URL.decodeStrictly(parts[2]) else {
        invariant(false, "accepted a token whose signature is not canonical base64url: \(token.debugDescription)")
        return
    }
    let signingInput = Data((parts[0] + "." + parts[1]).utf8)
    invariant(
        HMAC<SHA256>.isValidAuthenticationCode(signature, authenticating: signingInput, using: key),
        "accepted a token not signed with the key its kid names: \(token.debugDescription)"
    )
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    var input = FuzzInput(start, count)
    switch input.byte() % 4 {
    case 0:
        let token = text(input.rest())
        if case .success(let claims) = verify(token) {
            checkAccepted(token, claims)
        }
    case 1, 2:
        let encode = count > 0 && start[0] % 4 == 1
        let choice = input.byte() % 3
        let signingInput: String
        if encode {
            let header = input.field()
            signingInput = Base64URL.encode(header) + "." + Base64URL.encode(input.rest())
        } else {
            signingInput = text(input.rest())
        }
        let keyName = ["k1", "k2", nil][Int(choice)]
        let token = sign(signingInput, with: keyName.flatMap { keys[$0] } ?? unconfiguredKey)
        switch verify(token) {
        case .success(let claims):
            invariant(keyName != nil, "accepted a token signed with an unconfigured key: \(token.debugDescription)")
            invariant(keyId(of: token) == keyName, "accepted a token signed with \(keyName ?? "?") under another kid: \(token.debugDescription)")
            checkAccepted(token, claims)
        case .failure:
            break
        }
    default:
        let transferId = text(input.field())
        let recipient = text(input.field())
        let ttl = Int(input.byte()) + 1
        let issued: (token: String, claims: DownloadTokenClaims)? = runBlocking {
            try? tokens.issue(transferId: transferId, recipient: recipient, ttl: ttl, now: now)
        }
        guard let issued else {
            invariant(false, "could not issue a token for \(transferId.debugDescription) to \(recipient.debugDescription)")
            return 0
        }
        switch verify(issued.token) {
        case .success(let claims):
            invariant(claims == issued.claims, "claims changed in a round trip: \(issued.claims) became \(claims)")
            checkAccepted(issued.token, claims)
            invariant(verify(issued.token, at: claims.exp) == .failure(.expired), "a token is still valid at its expiry")
        case .failure(let error):
            invariant(issued.token.utf8.count > 1024, "refused a token it issued (\(error)): \(issued.token)")
        }
    }
    return 0
}
