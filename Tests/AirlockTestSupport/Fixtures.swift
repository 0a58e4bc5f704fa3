public import Foundation

/// Test inputs built at run time: nothing harmful is committed whole.
public enum Fixtures {
    /// The EICAR test file, assembled from two halves so the repository never holds it whole.
    public static var eicar: Data {
        let first = #"X5O!P%@AP[4\PZX54(P^)7CC)7}$"#
        let second = "EICAR-STANDARD-" + #"ANTIVIRUS-TEST-FILE!$H+H*"#
        return Data((first + second).utf8)
    }

    /// The root of this package's checkout.
    public static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The bundled test signatures.
    public static var signatureDirectory: String {
        self.packageRoot.appendingPathComponent("Config/signatures").path
    }

    /// Debian's clamav-testfiles.
    public static let clamAVTestFiles = "/usr/share/clamav-testfiles"

    /// A valid 1×1 PNG image.
    public static let png = Data(
        base64Encoded: "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    )!

    /// A minimal, harmless PE32 executable (a single `ret`), which libmagic identifies as a Windows executable.
    public static var portableExecutable: Data {
        var bytes = [UInt8](repeating: 0, count: 0x400)
        func put16(_ value: UInt16, at offset: Int) {
            bytes[offset] = UInt8(value & 0xff)
            bytes[offset + 1] = UInt8(value >> 8)
        }
        func put32(_ value: UInt32, at offset: Int) {
            for index in 0..<4 { bytes[offset + index] = UInt8((value >> (8 * UInt32(index))) & 0xff) }
        }
        bytes[0] = UInt8(ascii: "M")
        bytes[1] = UInt8(ascii: "Z")
        put32(0x40, at: 0x3c)
        bytes.replaceSubrange(0x40..<0x44, with: Array("PE\0\0".utf8))
        put16(0x14c, at: 0x44)  // i386
        put16(1, at: 0x46)  // one section
        put16(0xe0, at: 0x54)  // optional header size
        put16(0x0102, at: 0x56)  // executable, 32-bit
        let optional = 0x58
        put16(0x10b, at: optional)  // PE32
        put32(0x1000, at: optional + 16)  // entry point
        put32(0x400000, at: optional + 28)  // image base
        put32(0x1000, at: optional + 32)
        put32(0x200, at: optional + 36)
        put16(2, at: optional + 68)  // GUI subsystem
        let section = optional + 0xe0
        bytes.replaceSubrange(section..<(section + 5), with: Array(".text".utf8))
        put32(0x1000, at: section + 8)
        put32(0x1000, at: section + 12)
        put32(0x200, at: section + 16)
        put32(0x200, at: section + 20)
        put32(0x6000_0020, at: section + 36)
        bytes[0x200] = 0xc3
        return Data(bytes)
    }

    /// Deterministic pseudo-random bytes (SplitMix64), so a test's "random" input is the same every run.
    public static func randomBytes(count: Int, seed: UInt64) -> Data {
        var state = seed
        var data = Data(capacity: count + 8)
        while data.count < count {
            state &+= 0x9E37_79B9_7F4A_7C15
            var mixed = state
            mixed = (mixed ^ (mixed >> 30)) &* 0xBF58_476D_1CE4_E5B9
            mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
            mixed ^= mixed >> 31
            withUnsafeBytes(of: mixed.littleEndian) { data.append(contentsOf: $0) }
        }
        return data.prefix(count)
    }
}
