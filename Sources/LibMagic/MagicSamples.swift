/// The first bytes of files of the types the type policy cares about most (executables, archives, images,
/// documents), enough for libmagic to know them: ``MagicPool`` checks its first pass against them at start-up.
enum MagicSamples {
    static let all: [(name: String, bytes: [UInt8])] = [
        ("JPEG", [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10] + Array("JFIF".utf8) + [0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00] + noise),
        ("PNG", [0x89] + Array("PNG\r\n".utf8) + [0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D] + Array("IHDR".utf8) + [0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0] + noise),
        ("GIF", Array("GIF89a".utf8) + [1, 0, 1, 0, 0, 0, 0] + noise),
        ("PDF", Array("%PDF-1.7\n%".utf8) + [0xE2, 0xE3, 0xCF, 0xD3, 0x0A] + noise),
        // A local file header: version 2.0, deflated, no sizes yet, an 8-byte name.
        ("ZIP", Array("PK".utf8) + [0x03, 0x04, 0x14, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x21, 0x00] + [UInt8](repeating: 0, count: 12) + [0x08, 0x00, 0x00, 0x00] + Array("test.txt".utf8) + noise),
        ("gzip", [0x1F, 0x8B, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03] + noise),
        ("7-Zip", Array("7z".utf8) + [0xBC, 0xAF, 0x27, 0x1C, 0x00, 0x04] + noise),
        ("RAR", Array("Rar!".utf8) + [0x1A, 0x07, 0x01, 0x00] + noise),
        ("ELF executable", elf(type: 2)),
        ("ELF shared object", elf(type: 3)),
        ("PE executable", portableExecutable),
        ("Mach-O", [0xCF, 0xFA, 0xED, 0xFE, 0x07, 0x00, 0x00, 0x01, 0x03, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00] + noise),
    ]

    /// Bytes that look like nothing, after each header (fixed, so that the check is the same at every start).
    private static let noise: [UInt8] = {
        var state: UInt32 = 0x2545_F491
        return (0..<1024).map { _ in
            state ^= state << 13
            state ^= state >> 17
            state ^= state << 5
            return UInt8(truncatingIfNeeded: state)
        }
    }()

    /// A 64-bit little-endian x86-64 ELF header of `type` (2 executable, 3 shared object).
    private static func elf(type: UInt8) -> [UInt8] {
        var header = [UInt8](repeating: 0, count: 64)
        header[0...3] = [0x7F, 0x45, 0x4C, 0x46]
        header[4] = 2  // 64-bit
        header[5] = 1  // little-endian
        header[6] = 1  // version
        header[16] = type
        header[18] = 0x3E  // x86-64
        header[20] = 1  // version
        header[52] = 64  // header size
        header[54] = 56  // program header entry size
        header[58] = 64  // section header entry size
        return header + noise
    }

    /// A DOS stub pointing at a PE header for an x86-64 executable.
    private static let portableExecutable: [UInt8] = {
        var bytes = [UInt8](repeating: 0, count: 0x200)
        bytes[0...1] = [0x4D, 0x5A]  // MZ
        bytes[0x3C] = 0x80  // offset of the PE header
        bytes[0x80...0x83] = [0x50, 0x45, 0x00, 0x00]  // PE\0\0
        bytes[0x84...0x85] = [0x64, 0x86]  // x86-64
        bytes[0x86] = 1  // one section
        bytes[0x94] = 0xF0  // size of the optional header
        bytes[0x96...0x97] = [0x22, 0x00]  // executable, large-address aware
        bytes[0x98...0x99] = [0x0B, 0x02]  // PE32+
        bytes[0x98 + 68] = 3  // subsystem: console
        return bytes + noise
    }()
}
