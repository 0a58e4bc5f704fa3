// Fuzzes filename handling (DESIGN §3: filenames are metadata; NUL, control characters or more than 255 UTF-8
// bytes → 400; directory parts are stripped to the last component).
//
// The whole input is a filename as an IM server hands it off (`?filename=`, already percent-decoded).
// - Filename.served(from:) refuses exactly the names DESIGN refuses, and what it serves is a non-empty last
//   component of the name: no `/` or `\`, not `.` or `..`, no control character, a byte suffix of the name, and
//   served again unchanged.
// - decode(encode(x)) == x: the RFC 5987 encoding for Content-Disposition holds only unreserved ASCII and `%XX`,
//   and decodes (with Filename.percentDecoded and with an independent decoder) to the same bytes.
import AirlockCore
import FuzzSupport

func isControl(_ scalar: Unicode.Scalar) -> Bool {
    scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
}

func checkEncoding(_ name: String) {
    let encoded = Filename.percentEncoded(name)
    var bytes: [UInt8] = []
    var utf8 = Array(encoded.utf8)[...]
    let hexDigits = Array("0123456789ABCDEF".utf8)
    while let byte = utf8.popFirst() {
        if byte == UInt8(ascii: "%") {
            guard let high = utf8.popFirst().flatMap({ hexDigits.firstIndex(of: $0) }),
                let low = utf8.popFirst().flatMap({ hexDigits.firstIndex(of: $0) })
            else {
                invariant(false, "\(encoded.debugDescription) has a % without two uppercase hex digits")
                return
            }
            bytes.append(UInt8(high << 4 | low))
        } else {
            let unreserved =
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte) || "-._~".utf8.contains(byte)
            invariant(unreserved, "\(encoded.debugDescription) holds the unescaped byte \(byte)")
            bytes.append(byte)
        }
    }
    invariant(bytes == Array(name.utf8), "\(encoded.debugDescription) does not decode to \(name.debugDescription)")
    invariant(Filename.percentDecoded(Substring(encoded)) == name, "percentDecoded(percentEncoded(\(name.debugDescription))) differs")
}

func checkServed(_ name: String) {
    let bytes = name.utf8.count
    let hasControl = name.unicodeScalars.contains(where: isControl)
    // The last component, cut on Unicode scalars, independently of how the product cuts it.
    let lastComponent = name.unicodeScalars.split(whereSeparator: { $0 == "/" || $0 == "\\" }).last.map { String(String.UnicodeScalarView($0)) }
    do throws(BrokerError) {
        let served = try Filename.served(from: name)
        invariant(bytes > 0 && bytes <= 255, "served a name of \(bytes) bytes")
        invariant(!hasControl, "served a name with a control character: \(name.debugDescription)")
        invariant(!served.isEmpty && served != "." && served != "..", "served \(served.debugDescription)")
        invariant(
            !served.unicodeScalars.contains("/") && !served.unicodeScalars.contains("\\"),
            "served \(served.debugDescription) from \(name.debugDescription): a directory part survived"
        )
        invariant(
            served.utf8.elementsEqual(lastComponent?.utf8 ?? "".utf8),
            "served \(served.debugDescription), not the last component of \(name.debugDescription)"
        )
        invariant((try? Filename.served(from: served)) == served, "serving \(served.debugDescription) again changes it")
        checkEncoding(served)
    } catch {
        let unusable = lastComponent == nil || lastComponent == "." || lastComponent == ".."
        invariant(bytes == 0 || bytes > 255 || hasControl || unusable, "refused the usable name \(name.debugDescription): \(error)")
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    var input = FuzzInput(start, count)
    let name = text(input.rest())
    checkEncoding(name)
    checkServed(name)
    return 0
}
