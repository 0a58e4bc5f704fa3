public import Foundation

/// Filenames are metadata only (DESIGN §3): checked, cut to their last component, and encoded for headers.
/// The server and the fuzz targets (`Fuzz/`) share these functions.
public enum Filename {
    /// The longest filename accepted, in UTF-8 bytes.
    public static let maximumBytes = 255

    /// The last path component of `filename`, after refusing NUL, control characters and names over 255 bytes.
    ///
    /// - Throws: ``BrokerError/invalidRequest(_:)`` saying what is wrong.
    public static func served(from filename: String) throws(BrokerError) -> String {
        guard !filename.isEmpty else {
            throw BrokerError.invalidRequest("filename is missing: give it as ?filename=")
        }
        guard filename.utf8.count <= Self.maximumBytes else {
            throw BrokerError.invalidRequest("filename is longer than 255 bytes")
        }
        // Printable ASCII, the usual case, has no control or bidirectional character: cut on its bytes.
        if filename.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) {
            let last = filename.utf8.split(whereSeparator: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "\\") }).last
            return try Self.usable(last.map { String(Substring($0)) } ?? "")
        }
        guard !filename.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw BrokerError.invalidRequest("filename contains NUL or control characters")
        }
        guard !filename.unicodeScalars.contains(where: Self.isBidirectionalControl) else {
            throw BrokerError.invalidRequest(
                "filename contains a bidirectional control character (U+202A–U+202E, U+2066–U+2069), which can disguise its extension; rename the file"
            )
        }
        // Cut on Unicode scalars, not Characters: a combining mark after `/` makes one Character that is not "/".
        let last = filename.unicodeScalars.split(whereSeparator: { $0 == "/" || $0 == "\\" }).last.map { String(String.UnicodeScalarView($0)) } ?? ""
        return try Self.usable(last)
    }

    private static func usable(_ last: String) throws(BrokerError) -> String {
        guard !last.isEmpty, last != ".", last != ".." else {
            throw BrokerError.invalidRequest("filename has no usable last component")
        }
        return last
    }

    /// Whether `scalar` is an explicit bidirectional embedding, override or isolate (U+202A–U+202E, U+2066–U+2069),
    /// which can make `invoice\u{202E}fdp.js` look like `invoicesj.pdf`.
    public static func isBidirectionalControl(_ scalar: Unicode.Scalar) -> Bool {
        (0x202A...0x202E).contains(scalar.value) || (0x2066...0x2069).contains(scalar.value)
    }

    /// `text` with every control and format character (Unicode categories Cc and Cf: NUL, bidirectional controls,
    /// zero-width characters) written as a Swift escape (`\u{200B}`), so a terminal shows what is there.
    public static func escapingInvisibles(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: Self.isInvisible) else { return text }
        var escaped = ""
        for scalar in text.unicodeScalars {
            if Self.isInvisible(scalar) {
                escaped += "\\u{\(String(scalar.value, radix: 16, uppercase: true))}"
            } else {
                escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }

    private static func isInvisible(_ scalar: Unicode.Scalar) -> Bool {
        let category = scalar.properties.generalCategory
        return category == .control || category == .format
    }

    /// The RFC 5987 encoding of `name` for `filename*=UTF-8''…`: everything but unreserved ASCII is percent-encoded.
    public static func percentEncoded(_ name: String) -> String {
        var allowed = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)..<Unicode.Scalar(128)))
        allowed.insert(charactersIn: "-._~")
        return name.addingPercentEncoding(withAllowedCharacters: allowed) ?? "download"
    }

    /// One percent-decoded URL path segment (`+` stays `+`), or nil when a `%` does not start a two-digit hex
    /// escape or the bytes are not UTF-8.
    public static func percentDecoded(_ segment: Substring) -> String? {
        guard Self.isWellFormedPercentEncoding(segment) else { return nil }
        // Decoded here rather than with `removingPercentEncoding`, which drops a leading U+FEFF (found by FuzzFilename).
        var bytes: [UInt8] = []
        var utf8 = segment.utf8[...]
        while let byte = utf8.popFirst() {
            guard byte == UInt8(ascii: "%"), let high = utf8.popFirst(), let low = utf8.popFirst() else {
                bytes.append(byte)
                continue
            }
            bytes.append(Self.hexValue(high) << 4 | Self.hexValue(low))
        }
        return String(validating: bytes, as: UTF8.self)
    }

    /// The value of an ASCII hex digit (already checked by ``isWellFormedPercentEncoding(_:)``).
    private static func hexValue(_ digit: UInt8) -> UInt8 {
        digit <= UInt8(ascii: "9") ? digit - UInt8(ascii: "0") : (digit | 0x20) - UInt8(ascii: "a") + 10
    }

    /// Whether every `%` starts a two-digit hex escape.
    public static func isWellFormedPercentEncoding(_ text: Substring) -> Bool {
        var utf8 = text.utf8[...]
        while let index = utf8.firstIndex(of: UInt8(ascii: "%")) {
            let escape = utf8[utf8.index(after: index)...].prefix(2)
            guard escape.count == 2, escape.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 | 0x20 >= 97 && $0 | 0x20 <= 102) }) else {
                return false
            }
            utf8 = utf8[utf8.index(index, offsetBy: 3)...]
        }
        return true
    }
}
