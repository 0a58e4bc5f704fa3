internal import CMagic

#if canImport(Glibc)
    import Glibc
#endif

/// The entries of libmagic's compiled database that can print a MIME type, derived at start-up from the system's own
/// database, for a first, cheaper pass of type detection (DESIGN §7 allows a cheaper libmagic configuration where it
/// gives the same MIME types).
///
/// Why it gives the same answers: asked for a MIME type, libmagic tries the trees of each compiled file in order
/// and stops at the first tree where an entry with a description or a MIME type matches (`softmagic.c`, `match`).
/// A tree that names no MIME type (no `!:mime` at any level) prints nothing when it matches: for bytes that are not
/// text, the answer is then `application/octet-stream` (`file_default`), as when nothing matches. Left out, such a
/// tree changes nothing when no tree that names a MIME type matches either. So, for bytes that are not text, when
/// these entries alone answer `application/octet-stream` (`charset=binary`), the whole database answers the same;
/// any other answer is asked again of the whole database (a tree without a MIME type may stop the search first
/// there: Python sources, for one, are `text/plain` for the whole database but `text/x-script.python` here). The
/// few entries that name `application/octet-stream` themselves are renamed in the derived copy
/// (``renamedUntyped``), so that this answer can only mean that nothing was found.
/// Random bytes, what end-to-end encrypted uploads look like, are the case this is for: every entry is tried and
/// none matches, which costs libmagic about twice as much with the whole database.
///
/// Entries kept, as whole trees (a top-level test and its continuations): those with a MIME type at any level, those
/// that `use` a named entry or re-run the database at an offset (`indirect`), and every named entry.
struct MimeEntries {
    /// The derived databases, one per compiled file of libmagic's search path, in their order.
    let databases: [[UInt8]]
    /// Entries kept and entries read, over all databases.
    let keptEntries: Int
    let totalEntries: Int
    /// The fixed bytes that the top-level tests of the kept trees look for (see ``KnownHeaders``).
    let knownHeaders: KnownHeaders

    /// Derives the entries from the files libmagic loads by default (`magic_getpath`).
    ///
    /// Nil, with the reason, when the first pass would not be sound: a file of the search path is a magic source
    /// file with entries (a local `/etc/magic`), a directory, or a compiled database of a format this code does not
    /// know. A missing file is left out, as libmagic leaves it out.
    static func derive() -> Result<MimeEntries, Unavailable> {
        guard let path = magic_getpath(nil, 0).map({ String(cString: $0) }) else {
            return .failure(Unavailable(reason: "libmagic reports no database path"))
        }
        var databases: [[UInt8]] = []
        var kept = 0
        var total = 0
        var headers: [(offset: Int, bytes: [UInt8])] = []
        for component in path.split(separator: ":").map(String.init) where !component.isEmpty {
            let compiled = component.hasSuffix(".mgc") ? component : component + ".mgc"
            if let bytes = readRegularFile(compiled) {
                guard let reduced = Self.reduce(bytes) else {
                    return .failure(Unavailable(reason: "\(compiled) is not a compiled database of format \(formatVersion)"))
                }
                databases.append(reduced.bytes)
                kept += reduced.kept
                total += reduced.total
                headers += reduced.headers
            } else if let source = readRegularFile(component) {
                guard !Self.hasEntries(source: source) else {
                    return .failure(Unavailable(reason: "\(component) holds local magic entries"))
                }
            } else if isDirectory(component) {
                return .failure(Unavailable(reason: "\(component) is a directory of magic sources"))
            }
        }
        guard !databases.isEmpty else {
            return .failure(Unavailable(reason: "no compiled database on libmagic's path \(path)"))
        }
        return .success(MimeEntries(databases: databases, keptEntries: kept, totalEntries: total, knownHeaders: KnownHeaders(headers)))
    }

    /// Why the first pass is off.
    struct Unavailable: Error {
        let reason: String
    }

    // The compiled format (`file.h` of file 5.x, format 18): a header the size of one entry (magic number, format,
    // then the number of entries in each of the two sets: tests, then named entries), then `struct magic` records.
    static let magicNumber: UInt32 = 0xF11E_041C
    static let formatVersion: UInt32 = 18
    static let entrySize = 376
    private static let continuationLevelOffset = 0
    private static let flagOffset = 2
    private static let relationOffset = 4
    private static let valueLengthOffset = 5
    private static let typeOffset = 6
    private static let maskOperatorOffset = 9
    private static let testOffsetOffset = 12
    private static let maskOffset = 24
    private static let stringFlagsOffset = 28
    private static let valueOffset = 32
    private static let valueSize = 128
    static let mimeTypeOffset = 224
    private static let mimeTypeSize = 80
    private static let typeIndirect: UInt8 = 41
    private static let typeName: UInt8 = 45
    private static let typeUse: UInt8 = 46

    /// The database `bytes` with only the trees that can print a MIME type; nil when `bytes` is not of the format
    /// above, in this machine's byte order.
    static func reduce(_ bytes: [UInt8]) -> (bytes: [UInt8], kept: Int, total: Int, headers: [(offset: Int, bytes: [UInt8])])? {
        guard bytes.count >= Self.entrySize, bytes.count % Self.entrySize == 0,
            Self.word(bytes, 0) == Self.magicNumber, Self.word(bytes, 4) == Self.formatVersion
        else { return nil }
        let counts = [Int(Self.word(bytes, 8)), Int(Self.word(bytes, 12))]
        guard counts[0] + counts[1] == bytes.count / Self.entrySize - 1 else { return nil }

        var output = [UInt8](repeating: 0, count: Self.entrySize)
        output.reserveCapacity(bytes.count)
        var keptCounts = [0, 0]
        var headers: [(offset: Int, bytes: [UInt8])] = []
        var first = 1
        for set in 0..<2 {
            let end = first + counts[set]
            var tree = first
            while tree < end {
                var next = tree + 1
                while next < end, Self.continuationLevel(bytes, next) != 0 { next += 1 }
                guard Self.continuationLevel(bytes, tree) == 0 else { return nil }
                if set == 1 || Self.type(bytes, tree) == Self.typeName || (tree..<next).contains(where: { Self.canPrintMIME(bytes, $0) }) {
                    let start = output.count
                    output.append(contentsOf: bytes[(tree * Self.entrySize)..<(next * Self.entrySize)])
                    Self.renameUntyped(&output, entries: start / Self.entrySize..<(output.count / Self.entrySize))
                    keptCounts[set] += next - tree
                    if set == 0, let header = Self.fixedBytes(bytes, tree) { headers.append(header) }
                }
                tree = next
            }
            first = end
        }
        // The header: the same magic number and format, the new counts.
        Self.setWord(&output, 0, Self.magicNumber)
        Self.setWord(&output, 4, Self.formatVersion)
        Self.setWord(&output, 8, UInt32(keptCounts[0]))
        Self.setWord(&output, 12, UInt32(keptCounts[1]))
        return (output, keptCounts[0] + keptCounts[1], counts[0] + counts[1], headers)
    }

    /// The bytes a test compares for equality at a fixed offset, when it is that simple: a string without flags,
    /// or a 4- or 8-byte number (its fully masked bytes from the first); nil for anything else.
    private static func fixedBytes(_ bytes: [UInt8], _ entry: Int) -> (offset: Int, bytes: [UInt8])? {
        let base = entry * Self.entrySize
        let offset = Int(Int32(bitPattern: Self.word(bytes, base + Self.testOffsetOffset)))
        // Not indirect, not relative to an earlier match, not from the end of the file; an equality.
        guard bytes[base + Self.flagOffset] & 0x87 == 0, bytes[base + Self.relationOffset] == UInt8(ascii: "="), offset >= 0 else {
            return nil
        }
        let value = Array(bytes[(base + Self.valueOffset)..<(base + Self.valueOffset + 8)])
        let mask = Array(bytes[(base + Self.maskOffset)..<(base + Self.maskOffset + 8)])
        let maskOperator = bytes[base + Self.maskOperatorOffset]
        let type = Self.type(bytes, entry)
        let fixed: [UInt8]
        switch type {
        case 5:  // string
            let length = Int(bytes[base + Self.valueLengthOffset])
            guard Self.word(bytes, base + Self.stringFlagsOffset) == 0, length > 0, length <= Self.valueSize else { return nil }
            fixed = Array(bytes[(base + Self.valueOffset)..<(base + Self.valueOffset + length)])
        case 4, 11, 8, 24, 25, 26:  // long, lelong, belong, quad, lequad, bequad
            let width = [4, 11, 8].contains(type) ? 4 : 8
            let bigEndian = [8, 26].contains(type)
            guard maskOperator == 0 else { return nil }
            // The value and the mask as they lie in memory (stored as little-endian 64-bit numbers).
            let order = bigEndian ? Array((0..<width).reversed()) : Array(0..<width)
            let masked = mask.allSatisfy { $0 == 0 }
            fixed = Array(order.prefix { masked || mask[$0] == 0xFF }.map { value[$0] })
        default:
            return nil
        }
        return fixed.count >= 3 ? (offset, fixed) : nil
    }

    /// The MIME type the first pass answers for "no type" only when libmagic itself found none: a few entries name
    /// `application/octet-stream` ("packed data", "shell archive text", …), and an `indirect` test re-runs the
    /// derived database, not the whole one, so such an entry could print it where the whole database would not.
    /// In the derived copy they print this name instead, which sends their bytes to the whole database.
    static let renamedUntyped = Array("application/x-octet-stream-entry".utf8)
    /// The MIME type field of an entry that names `application/octet-stream`, its terminating zero included.
    static let untypedField = Array("application/octet-stream".utf8) + [0]

    private static func renameUntyped(_ bytes: inout [UInt8], entries: Range<Int>) {
        for entry in entries {
            let field = entry * Self.entrySize + Self.mimeTypeOffset
            guard bytes[field..<(field + Self.untypedField.count)].elementsEqual(Self.untypedField) else { continue }
            for index in 0..<Self.mimeTypeSize { bytes[field + index] = 0 }
            bytes.replaceSubrange(field..<(field + Self.renamedUntyped.count), with: Self.renamedUntyped)
        }
    }

    private static func canPrintMIME(_ bytes: [UInt8], _ entry: Int) -> Bool {
        let type = Self.type(bytes, entry)
        return bytes[entry * Self.entrySize + Self.mimeTypeOffset] != 0 || type == Self.typeUse || type == Self.typeIndirect
    }

    private static func continuationLevel(_ bytes: [UInt8], _ entry: Int) -> UInt16 {
        let offset = entry * Self.entrySize + Self.continuationLevelOffset
        return UInt16(bytes[offset]) | UInt16(bytes[offset + 1]) << 8
    }

    private static func type(_ bytes: [UInt8], _ entry: Int) -> UInt8 {
        bytes[entry * Self.entrySize + Self.typeOffset]
    }

    private static func word(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[offset + $1]) << (8 * $1) }
    }

    private static func setWord(_ bytes: inout [UInt8], _ offset: Int, _ value: UInt32) {
        for index in 0..<4 { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }

    /// Whether a magic source file has a line other than blanks and comments.
    static func hasEntries(source: [UInt8]) -> Bool {
        source.split(separator: UInt8(ascii: "\n")).contains { line in
            guard let first = line.first(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\t") && $0 != UInt8(ascii: "\r") }) else {
                return false
            }
            return first != UInt8(ascii: "#")
        }
    }
}

/// The bytes of a regular file; nil when it is missing, not a regular file, or unreadable.
private func readRegularFile(_ path: String) -> [UInt8]? {
    let descriptor = open(path, O_RDONLY | O_CLOEXEC)
    guard descriptor >= 0 else { return nil }
    defer { close(descriptor) }
    var status = stat()
    guard fstat(descriptor, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG else { return nil }
    var bytes = [UInt8](repeating: 0, count: Int(status.st_size))
    var done = 0
    while done < bytes.count {
        let count = bytes.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + done, $0.count - done) }
        if count < 0, errno == EINTR { continue }
        guard count > 0 else { return nil }
        done += count
    }
    return bytes
}

private func isDirectory(_ path: String) -> Bool {
    var status = stat()
    return stat(path, &status) == 0 && (status.st_mode & S_IFMT) == S_IFDIR
}

/// Fixed bytes at fixed offsets that some file type's top-level test looks for: the JPEG's `FF D8 FF`, PNG's
/// signature, `%PDF-`, `PK\u{3}\u{4}` and hundreds more, each at least 3 bytes long. Bytes that start with one of them will
/// probably get a type, so ``MagicPool`` asks the whole database at once instead of paying for a first pass that
/// would only send them there. A choice of cost alone: the answers are the same either way. Random bytes match one
/// of them about once in 400,000 (758 headers on Debian 12, most of them 4 bytes long).
struct KnownHeaders: Sendable {
    /// At offset 0, by first byte.
    private let atStart: [[[UInt8]]]
    /// At other offsets.
    private let elsewhere: [(offset: Int, bytes: [UInt8])]

    init(_ headers: [(offset: Int, bytes: [UInt8])]) {
        var atStart = [[[UInt8]]](repeating: [], count: 256)
        var elsewhere: [(offset: Int, bytes: [UInt8])] = []
        for header in headers {
            if header.offset == 0 {
                atStart[Int(header.bytes[0])].append(header.bytes)
            } else {
                elsewhere.append(header)
            }
        }
        self.atStart = atStart
        self.elsewhere = elsewhere
    }

    /// The number of headers.
    var count: Int {
        self.atStart.reduce(0) { $0 + $1.count } + self.elsewhere.count
    }

    /// Whether `bytes` have one of the headers in its place.
    func match(_ bytes: UnsafeRawBufferPointer) -> Bool {
        func has(_ header: [UInt8], at offset: Int) -> Bool {
            offset + header.count <= bytes.count && header.indices.allSatisfy { bytes[offset + $0] == header[$0] }
        }
        if let first = bytes.first, self.atStart[Int(first)].contains(where: { has($0, at: 0) }) {
            return true
        }
        return self.elsewhere.contains { has($0.bytes, at: $0.offset) }
    }
}
