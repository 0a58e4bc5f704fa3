public import Crypto
public import Foundation

/// The HMAC-SHA256 signatures of XEP-0363 external upload URLs (DESIGN §3): Prosody `mod_http_upload_external`
/// v1 and v2, ejabberd `external_secret` (v1), Metronome and prosody-filer `token=` (v2's formula).
public struct XEP0363Signature: Sendable {
    /// Which formula a signature follows.
    public enum Version: Sendable, Equatable {
        /// `v = HMAC(secret, file_path + " " + Content-Length)`.
        case v1
        /// `v2 = HMAC(secret, file_path + "\0" + Content-Length + "\0" + Content-Type)`; also `token=`.
        case v2
    }

    private let key: SymmetricKey

    /// Signs and checks with `secret` (`xep0363.secret`, its UTF-8 bytes).
    public init(secret: String) {
        self.key = SymmetricKey(data: Data(secret.utf8))
    }

    /// The signature a query presents, highest version first (`v2` or `token`, then `v`); nil when it has none.
    public static func presented(v: Substring?, v2: Substring?, token: Substring?) -> (version: Version, signature: String)? {
        if let signature = v2 ?? token {
            return (.v2, String(signature))
        }
        if let signature = v {
            return (.v1, String(signature))
        }
        return nil
    }

    /// The lowercase hex signature of an upload of `length` bytes of `contentType` to `path` (the decoded file path).
    public func expected(_ version: Version, path: String, length: Int, contentType: String?) -> String {
        let message =
            switch version {
            case .v1: path + " " + String(length)
            case .v2: path + "\0" + String(length) + "\0" + (contentType ?? "")
            }
        return Data(HMAC<SHA256>.authenticationCode(for: Data(message.utf8), using: self.key)).map { String(format: "%02x", $0) }.joined()
    }

    /// Whether `presented` (hex, either case) is the signature, compared in constant time.
    public func isValid(_ presented: String, _ version: Version, path: String, length: Int, contentType: String?) -> Bool {
        let expected = self.expected(version, path: path, length: length, contentType: contentType)
        return ConstantTime.equal(Data(expected.utf8), Data(presented.lowercased().utf8))
    }
}
