import Crypto
import Foundation

/// Builds HS256 JWTs by hand, independently of the server's token code, to forge the tokens an attacker would.
enum HandCraftedToken {
    static func make(header: [String: Any], claims: [String: Any], secret: Data) -> String {
        let head = self.base64URL((try? JSONSerialization.data(withJSONObject: header, options: .sortedKeys)) ?? Data())
        let body = self.base64URL((try? JSONSerialization.data(withJSONObject: claims, options: .sortedKeys)) ?? Data())
        let signature = HMAC<SHA256>.authenticationCode(for: Data("\(head).\(body)".utf8), using: SymmetricKey(data: secret))
        return "\(head).\(body).\(self.base64URL(Data(signature)))"
    }

    static func download(transferId: String, recipient: String, secret: Data, kid: String = "dev", expires: Date) -> String {
        self.make(
            header: ["alg": "HS256", "typ": "JWT", "kid": kid],
            claims: ["tid": transferId, "sub": recipient, "exp": Int(expires.timeIntervalSince1970), "jti": UUID().uuidString],
            secret: secret
        )
    }

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}
