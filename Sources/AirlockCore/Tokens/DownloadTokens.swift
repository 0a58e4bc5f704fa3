import Crypto
public import Foundation

/// The claims of a download token: bound to one transfer and one recipient, expiring.
public struct DownloadTokenClaims: Sendable, Equatable {
    /// The transfer id (`tid`).
    public var tid: String
    /// The recipient (`sub`).
    public var sub: String
    /// Expiry (`exp`), whole seconds.
    public var exp: Date
    /// Unique token id (`jti`), for single use and the issuance record.
    public var jti: String

    /// Creates claims.
    public init(tid: String, sub: String, exp: Date, jti: String) {
        self.tid = tid
        self.sub = sub
        self.exp = exp
        self.jti = jti
    }
}

/// Why a token was refused.
public enum DownloadTokenError: Error, Equatable {
    /// Signature, key id, algorithm or format is wrong: 403.
    case invalid
    /// Expired: 410.
    case expired
}

/// Mints and verifies download tokens: compact JWTs (RFC 7519), HS256, signed with `tokens.keys[activeKeyId]`,
/// with the key id in the header so retired keys still verify until removed from the configuration.
///
/// Tokens are written and checked here rather than through JWTKit, whose general verification ran at 4,000 per
/// second (DESIGN §7 asks for 200,000 per core) and whose headers are not byte-stable across processes. Every
/// token's header is exactly `{"alg":"HS256","kid":"<id>","typ":"JWT"}` for a configured key id: a token whose
/// header is anything else (another algorithm, `none`, an unknown key id) is refused before any decoding. The
/// HMAC of the raw signing input is then checked in constant time under that key id's key, and only then is the
/// payload decoded (DESIGN §3).
public struct DownloadTokens: Sendable {
    /// For each configured key id: the encoded header its tokens carry, and the key.
    private let verifiers: [String: (header: [UInt8], mac: PrecomputedHMAC)]
    /// The id of the key that signs new tokens.
    public let activeKeyId: String

    /// The longest token worth looking at: ours are about 300 bytes.
    static let maxLength = 1024

    /// Loads the configured keys.
    public init(_ configuration: AirlockConfiguration.Tokens) {
        var verifiers: [String: (header: [UInt8], mac: PrecomputedHMAC)] = [:]
        for (id, secret) in configuration.keys {
            let quotedId = (try? JSONEncoder().encode(id)).map { String(decoding: $0, as: UTF8.self) } ?? "\"\""
            let header = Base64URL.encode(Array(#"{"alg":"HS256","kid":\#(quotedId),"typ":"JWT"}"#.utf8))
            verifiers[id] = (Array(header.utf8), PrecomputedHMAC(key: Array(secret)))
        }
        self.verifiers = verifiers
        self.activeKeyId = configuration.activeKeyId
    }

    /// Mints a token for `recipient` of `transferId`, valid for `ttl` seconds from `now`.
    public func issue(transferId: String, recipient: String, ttl: Int, now: Date) throws -> (token: String, claims: DownloadTokenClaims) {
        let claims = DownloadTokenClaims(
            tid: transferId,
            sub: recipient,
            exp: Date(timeIntervalSince1970: (now.timeIntervalSince1970 + Double(ttl)).rounded(.down)),
            // Time-ordered: the ledger's token index grows at its end (``UUID/timeOrdered(at:)``).
            jti: UUID.timeOrdered(at: now).uuidString
        )
        guard let signer = self.verifiers[self.activeKeyId] else { throw DownloadTokenError.invalid }
        // Plain strings (ids, most addresses) are quoted as they are; others through an encoder, made only for them.
        func quoted(_ text: String) throws -> String {
            if PlainJSON.isPlain(text) { return "\"" + text + "\"" }
            let encoder = JSONEncoder()
            encoder.outputFormatting = .withoutEscapingSlashes
            return String(decoding: try encoder.encode(text), as: UTF8.self)
        }
        // Keys sorted, the expiry an integer: what ``FlatJSON`` reads back.
        let payload =
            try #"{"exp":\#(Int64(claims.exp.timeIntervalSince1970)),"jti":\#(quoted(claims.jti)),"#
            + #""sub":\#(quoted(claims.sub)),"tid":\#(quoted(claims.tid))}"#
        let signingInput = String(decoding: signer.header, as: UTF8.self) + "." + Base64URL.encode(Array(payload.utf8))
        let signature = Array(signingInput.utf8).withUnsafeBytes { signer.mac.code(for: $0) }
        return (signingInput + "." + Base64URL.encode(Array(signature)), claims)
    }

    /// Verifies the header and signature, then the expiry against `now`. Never blocks: a few microseconds of CPU.
    public func verify(_ token: String, now: Date) throws(DownloadTokenError) -> DownloadTokenClaims {
        var token = token
        let claims = token.withUTF8 { bytes in self.claims(of: bytes) }
        guard let claims else { throw .invalid }
        guard claims.exp > now else { throw .expired }
        return claims
    }

    private func claims(of token: UnsafeBufferPointer<UInt8>) -> DownloadTokenClaims? {
        // A download token is small; anything much larger is not one of ours and is not worth parsing.
        guard token.count <= Self.maxLength else { return nil }
        guard let firstDot = token.firstIndex(of: UInt8(ascii: ".")) else { return nil }
        guard let secondDot = token[(firstDot + 1)...].firstIndex(of: UInt8(ascii: ".")) else { return nil }
        let header = UnsafeBufferPointer(rebasing: token[..<firstDot])
        let payload = UnsafeBufferPointer(rebasing: token[(firstDot + 1)..<secondDot])
        let signingInput = UnsafeBufferPointer(rebasing: token[..<secondDot])
        // The header selects the key and fixes the algorithm: only the headers written for configured key ids.
        guard let mac = self.verifiers.values.first(where: { $0.header.elementsEqual(header) })?.mac else { return nil }
        // The signature is checked on the raw bytes before anything in the payload is decoded (DESIGN §3).
        guard let signature = Base64URL.decode(UnsafeBufferPointer(rebasing: token[(secondDot + 1)...])),
            mac.isValid(signature, for: UnsafeRawBufferPointer(signingInput)),
            let json = Base64URL.decode(payload)
        else { return nil }
        // The payload is ours (the signature says so): a flat object of strings and an integer expiry.
        guard let fields = FlatJSON.parse(json), case .string(let tid)? = fields["tid"], case .string(let sub)? = fields["sub"],
            case .string(let jti)? = fields["jti"], case .integer(let exp)? = fields["exp"]
        else { return nil }
        return DownloadTokenClaims(tid: tid, sub: sub, exp: Date(timeIntervalSince1970: Double(exp)), jti: jti)
    }
}

/// HMAC-SHA256 (RFC 2104) with the key's inner and outer pads hashed once, ahead of time: a verification then
/// hashes only the message and the inner digest. `HMAC<SHA256>` redoes the key schedule on every call, which was a
/// fifth of a token verification.
struct PrecomputedHMAC: Sendable {
    private let inner: SHA256
    private let outer: SHA256

    init(key: [UInt8]) {
        var block = key.count > 64 ? Array(SHA256.hash(data: key)) : key
        block += [UInt8](repeating: 0, count: 64 - block.count)
        var inner = SHA256()
        inner.update(data: block.map { $0 ^ 0x36 })
        var outer = SHA256()
        outer.update(data: block.map { $0 ^ 0x5c })
        self.inner = inner
        self.outer = outer
    }

    /// The authentication code of `message`.
    func code(for message: UnsafeRawBufferPointer) -> SHA256Digest {
        var inner = self.inner
        inner.update(bufferPointer: message)
        var outer = self.outer
        inner.finalize().withUnsafeBytes { outer.update(bufferPointer: $0) }
        return outer.finalize()
    }

    /// Whether `signature` is the code of `message`, compared in constant time.
    func isValid(_ signature: [UInt8], for message: UnsafeRawBufferPointer) -> Bool {
        guard signature.count == SHA256.byteCount else { return false }
        var difference: UInt8 = 0
        for (expected, given) in zip(self.code(for: message), signature) {
            difference |= expected ^ given
        }
        return difference == 0
    }
}

/// A strict parser for one flat JSON object whose values are strings or integers, which is all a download
/// token's payload holds; JSONDecoder spent more than half of each verification on it.
enum FlatJSON {
    enum Value: Equatable {
        case string(String)
        case integer(Int64)
    }

    /// The object's fields; nil for anything else (nesting, other value types, trailing bytes, bad escapes).
    static func parse(_ bytes: [UInt8]) -> [String: Value]? {
        var parser = Parser(bytes: bytes)
        return parser.object()
    }

    private struct Parser {
        let bytes: [UInt8]
        var index = 0

        init(bytes: [UInt8]) {
            self.bytes = bytes
        }

        mutating func object() -> [String: Value]? {
            var fields: [String: Value] = [:]
            self.skipSpace()
            guard self.take(UInt8(ascii: "{")) else { return nil }
            self.skipSpace()
            if self.take(UInt8(ascii: "}")) { return self.atEnd ? fields : nil }
            while true {
                self.skipSpace()
                guard let key = self.string() else { return nil }
                self.skipSpace()
                guard self.take(UInt8(ascii: ":")) else { return nil }
                self.skipSpace()
                let value: Value
                if let text = self.string() {
                    value = .string(text)
                } else if let number = self.integer() {
                    value = .integer(number)
                } else {
                    return nil
                }
                // A repeated key is refused rather than resolved one way or the other.
                guard fields.updateValue(value, forKey: key) == nil else { return nil }
                self.skipSpace()
                if self.take(UInt8(ascii: ",")) { continue }
                guard self.take(UInt8(ascii: "}")) else { return nil }
                return self.atEnd ? fields : nil
            }
        }

        private var atEnd: Bool {
            var copy = self
            copy.skipSpace()
            return copy.index == copy.bytes.count
        }

        private mutating func skipSpace() {
            while self.index < self.bytes.count, [0x20, 0x09, 0x0a, 0x0d].contains(self.bytes[self.index]) {
                self.index += 1
            }
        }

        private mutating func take(_ byte: UInt8) -> Bool {
            guard self.index < self.bytes.count, self.bytes[self.index] == byte else { return false }
            self.index += 1
            return true
        }

        private mutating func integer() -> Int64? {
            let start = self.index
            if self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "-") { self.index += 1 }
            let digits = self.index
            while self.index < self.bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self.bytes[self.index]) {
                self.index += 1
            }
            guard self.index > digits, self.index - digits <= 18 else {
                self.index = start
                return nil
            }
            return Int64(String(decoding: self.bytes[start..<self.index], as: UTF8.self))
        }

        private mutating func string() -> String? {
            guard self.take(UInt8(ascii: "\"")) else { return nil }
            var output = ""
            var run = self.index
            while self.index < self.bytes.count {
                let byte = self.bytes[self.index]
                if byte == UInt8(ascii: "\"") {
                    output += String(decoding: self.bytes[run..<self.index], as: UTF8.self)
                    self.index += 1
                    return output
                }
                guard byte >= 0x20 else { return nil }
                guard byte == UInt8(ascii: "\\") else {
                    self.index += 1
                    continue
                }
                output += String(decoding: self.bytes[run..<self.index], as: UTF8.self)
                self.index += 1
                guard self.index < self.bytes.count else { return nil }
                let escaped = self.bytes[self.index]
                self.index += 1
                switch escaped {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): output.unicodeScalars.append(Unicode.Scalar(escaped))
                case UInt8(ascii: "b"): output += "\u{08}"
                case UInt8(ascii: "f"): output += "\u{0C}"
                case UInt8(ascii: "n"): output += "\n"
                case UInt8(ascii: "r"): output += "\r"
                case UInt8(ascii: "t"): output += "\t"
                case UInt8(ascii: "u"):
                    guard let unit = self.hex4() else { return nil }
                    if (0xD800...0xDBFF).contains(unit) {
                        guard self.take(UInt8(ascii: "\\")), self.take(UInt8(ascii: "u")), let low = self.hex4(),
                            (0xDC00...0xDFFF).contains(low),
                            let scalar = Unicode.Scalar(0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00))
                        else { return nil }
                        output.unicodeScalars.append(scalar)
                    } else {
                        guard let scalar = Unicode.Scalar(UInt32(unit)) else { return nil }
                        output.unicodeScalars.append(scalar)
                    }
                default:
                    return nil
                }
                run = self.index
            }
            return nil
        }

        private mutating func hex4() -> UInt16? {
            guard self.index + 4 <= self.bytes.count else { return nil }
            let text = String(decoding: self.bytes[self.index..<(self.index + 4)], as: UTF8.self)
            guard text.utf8.allSatisfy({ $0 < 0x80 && ($0 >= 0x30 && $0 <= 0x39 || ($0 | 0x20) >= 0x61 && ($0 | 0x20) <= 0x66) }),
                let value = UInt16(text, radix: 16)
            else { return nil }
            self.index += 4
            return value
        }
    }
}

/// Base64url without padding (RFC 7515 §2), strict: any other character, or leftover bits that are not zero,
/// make the input invalid.
enum Base64URL {
    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xff, count: 256)
        for (index, character) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8.enumerated() {
            table[Int(character)] = UInt8(index)
        }
        return table
    }()

    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var output: [UInt8] = []
        output.reserveCapacity((bytes.count * 4 + 2) / 3)
        var index = 0
        while index < bytes.count {
            let chunk =
                (UInt32(bytes[index]) << 16) | (index + 1 < bytes.count ? UInt32(bytes[index + 1]) << 8 : 0)
                | (index + 2 < bytes.count ? UInt32(bytes[index + 2]) : 0)
            let characters = min(4, (bytes.count - index) * 4 / 3 + ((bytes.count - index) < 3 ? 1 : 0))
            for position in 0..<characters {
                output.append(Self.alphabet[Int((chunk >> UInt32(18 - 6 * position)) & 0x3f)])
            }
            index += 3
        }
        return String(decoding: output, as: UTF8.self)
    }

    static func decode(_ text: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        guard text.count % 4 != 1 else { return nil }
        var output: [UInt8] = []
        output.reserveCapacity(text.count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        for character in text {
            let value = Self.values[Int(character)]
            guard value != 0xff else { return nil }
            accumulator = (accumulator << 6) | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                output.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        // Canonical encodings only: the bits left over must be zero.
        guard accumulator & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
        return output
    }
}
