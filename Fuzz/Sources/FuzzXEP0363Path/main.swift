// Fuzzes XEP0363Path.parse and XEP0363Signature (DESIGN §3, XEP-0363 external upload).
//
// Input: a flags byte, then newline-separated fields: the raw request path, the Content-Length, the Content-Type,
// the presented signature and, when flag 0x01 is set, the path prefix (else `/upload/`).
// A parsed path never holds `..`, `.`, an empty segment, `/` inside a segment, NUL or control characters; each
// segment is what an independent percent-decoder makes of the raw bytes; and re-encoding the segments parses back
// to the same path. The signatures follow the DESIGN formulas exactly, computed here independently.
import AirlockCore
import Crypto
import Foundation
import FuzzSupport

let secret = "fuzz-xep0363-secret-0123456789abcdef"
let signer = XEP0363Signature(secret: secret)

/// Percent-decodes raw bytes on its own: nil for a `%` without two hex digits or a result that is not UTF-8.
func independentlyDecoded(_ raw: Substring) -> [UInt8]? {
    var bytes: [UInt8] = []
    var utf8 = Array(raw.utf8)[...]
    func hex(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x41 + 10
        case 0x61...0x66: byte - 0x61 + 10
        default: nil
        }
    }
    while let byte = utf8.popFirst() {
        if byte == UInt8(ascii: "%") {
            guard let high = utf8.popFirst().flatMap(hex), let low = utf8.popFirst().flatMap(hex) else { return nil }
            bytes.append(high << 4 | low)
        } else {
            bytes.append(byte)
        }
    }
    guard String(validating: bytes, as: UTF8.self) != nil else { return nil }
    return bytes
}

func reference(_ version: XEP0363Signature.Version, path: String, length: Int, contentType: String?) -> String {
    var message = Array(path.utf8)
    switch version {
    case .v1:
        message += [0x20] + Array(String(length).utf8)
    case .v2:
        message += [0x00] + Array(String(length).utf8) + [0x00] + Array((contentType ?? "").utf8)
    }
    let code = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: Data(secret.utf8)))
    return code.map { String(format: "%02x", $0) }.joined()
}

func checkParsed(_ parsed: XEP0363Path, raw: String, prefix: String) {
    invariant(raw.utf8.starts(with: prefix.utf8), "parsed a path outside the prefix: \(raw.debugDescription)")
    invariant(parsed.segments.count >= 2, "fewer than two segments: \(parsed.segments)")
    invariant(parsed.filename.utf8.count <= 255, "filename over 255 bytes")
    invariant(parsed.path == parsed.segments.joined(separator: "/"), "path is not its segments joined")
    for segment in parsed.segments {
        let scalars = segment.unicodeScalars
        invariant(!segment.isEmpty && segment != "." && segment != "..", "segment \(segment.debugDescription) is empty, . or ..")
        invariant(!scalars.contains("/"), "segment \(segment.debugDescription) holds a /")
        invariant(
            !scalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) },
            "segment \(segment.debugDescription) holds a control character"
        )
    }
    // The segments are the raw path's `/`-separated bytes, each percent-decoded.
    let rawSegments = raw.utf8.dropFirst(prefix.utf8.count).split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
    invariant(
        raw.utf8.starts(with: prefix.utf8) && rawSegments.count == parsed.segments.count,
        "\(raw.debugDescription) has \(rawSegments.count) raw segments but parsed into \(parsed.segments)"
    )
    for (rawSegment, segment) in zip(rawSegments, parsed.segments) {
        let decoded = independentlyDecoded(Substring(text(Array(rawSegment))))
        invariant(decoded == Array(segment.utf8), "\(text(Array(rawSegment)).debugDescription) decoded to \(segment.debugDescription)")
    }
    // Encoding the segments again parses back to the same path.
    let encoded = prefix + parsed.segments.map { Filename.percentEncoded($0) }.joined(separator: "/")
    invariant((try? XEP0363Path.parse(encoded, prefix: prefix)) == parsed, "\(encoded.debugDescription) does not parse back to \(parsed.segments)")
}

func checkSignatures(_ path: String, length: Int, contentType: String?, presented: String) {
    for version in [XEP0363Signature.Version.v1, .v2] {
        let expected = reference(version, path: path, length: length, contentType: contentType)
        invariant(
            signer.expected(version, path: path, length: length, contentType: contentType) == expected,
            "\(version) differs from the DESIGN formula"
        )
        invariant(signer.isValid(expected, version, path: path, length: length, contentType: contentType), "refused its own \(version) signature")
        invariant(
            signer.isValid(expected.uppercased(), version, path: path, length: length, contentType: contentType),
            "refused an uppercase signature"
        )
        invariant(
            signer.isValid(presented, version, path: path, length: length, contentType: contentType) == (presented.lowercased() == expected),
            "accepted \(presented.debugDescription) as the \(version) signature \(expected)"
        )
        let other: XEP0363Signature.Version = version == .v1 ? .v2 : .v1
        invariant(!signer.isValid(expected, other, path: path, length: length, contentType: contentType), "a \(version) signature passed as \(other)")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    var input = FuzzInput(start, count)
    let flags = input.byte()
    let raw = text(input.field())
    let length = Int(text(input.field())) ?? 0
    let contentTypeField = input.field()
    let contentType = flags & 0x02 == 0 ? text(contentTypeField) : nil
    let presented = text(input.field())
    let prefix = flags & 0x01 == 0 ? "/upload/" : text(input.rest())

    // Which signature a query presents: v2, then token, then v.
    let present = (v: flags & 0x04 != 0, v2: flags & 0x08 != 0, token: flags & 0x10 != 0)
    let chosen = XEP0363Signature.presented(
        v: present.v ? "1" : nil,
        v2: present.v2 ? "2" : nil,
        token: present.token ? "t" : nil
    )
    let expectedChoice: (XEP0363Signature.Version, String)? =
        present.v2 ? (.v2, "2") : present.token ? (.v2, "t") : present.v ? (.v1, "1") : nil
    invariant(chosen?.version == expectedChoice?.0 && chosen?.signature == expectedChoice?.1, "picked the wrong signature")

    do throws(XEP0363Path.Error) {
        let parsed = try XEP0363Path.parse(raw, prefix: prefix)
        checkParsed(parsed, raw: raw, prefix: prefix)
        checkSignatures(parsed.path, length: length, contentType: contentType, presented: presented)
    } catch .outsidePrefix {
        invariant(!raw.utf8.starts(with: prefix.utf8), "refused \(raw.debugDescription) as outside \(prefix)")
    } catch {
        invariant(raw.utf8.starts(with: prefix.utf8), "\(raw.debugDescription) is outside \(prefix) but got \(error)")
    }
    return 0
}
