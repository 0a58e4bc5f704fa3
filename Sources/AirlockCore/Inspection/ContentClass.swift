import Foundation
public import GRDB

/// Whether the inspection could see what a transfer holds (`contentClass` in the transfer JSON and the ledger).
///
/// End-to-end encrypted files (XMPP clients' OMEMO `aesgcm://` uploads) reach Airlock as ciphertext: libmagic finds
/// no type in it and libclamav no signature, so a `clean` verdict on it says nothing about what the recipient will
/// decrypt. Such content is recorded as ``opaque``: libmagic found no type (or only one of the weak matches random
/// bytes produce, ``opaqueCandidateTypes``) and the bytes of the whole file are statistically random
/// (``ByteHistogram/looksRandom``). Everything else is ``inspected``, including compressed media, which libmagic
/// types by its header; a body that starts with the header of a common compressed format is inspected even when
/// libmagic's order of tests let a weaker match win (``startsLikeCompressedFormat(_:)``).
public enum ContentClass: String, Sendable, Codable, CaseIterable, DatabaseValueConvertible {
    /// Typed by libmagic, or not random: the inspection saw the content.
    case inspected
    /// Untyped and statistically random (what encryption produces): the inspection could not see inside.
    case opaque

    /// The reason an opaque upload is quarantined with under `policy.opaqueContent` `quarantine`.
    public static let quarantineReason = "encrypted content cannot be inspected"

    /// The MIME types libmagic gives random bytes: none (`application/octet-stream`, "data"), or a weak match on
    /// two to four bytes. Of 20,000 random 4 KiB strings this libmagic called 98.8% `application/octet-stream` and
    /// 1.0% `application/x-dosexec` ("DOS executable (COM)", DESIGN §4); the rest were scattered over a dozen types.
    /// Those listed here are obsolete formats nobody sends; the others (`audio/mpeg`, AAC, JPEG XL, gzip, zlib …)
    /// are real compressed media and formats, which must never be classed opaque, so the few random strings typed
    /// as them (about 0.2%) are recorded as inspected.
    public static let opaqueCandidateTypes: Set<String> = [
        "application/octet-stream", "application/x-dosexec", "application/x-arc", "application/x-compress-ttcomp",
        "application/x-ibm-dsk", "application/x-commodore-exec", "application/x-tex-tfm",
    ]

    /// The class of content libmagic typed as `detectedType` (nil: no type) whose bytes counted `histogram`.
    public init(detectedType: String?, histogram: ByteHistogram) {
        let untyped = detectedType.map(Self.opaqueCandidateTypes.contains) ?? true
        self = untyped && histogram.looksRandom && !Self.startsLikeCompressedFormat(histogram.head) ? .opaque : .inspected
    }

    /// The headers of common compressed formats, each with its offset: gzip, ZIP (and JAR, DOCX, APK), PNG, JPEG,
    /// GIF, Ogg, the ISO media family (MP4, MOV, M4A, HEIC: `ftyp` at 4), xz, bzip2, zstd, 7-Zip, RAR, RIFF (WebP,
    /// WAV, AVI), Matroska/WebM, FLAC, MP3 with ID3, PDF.
    static let compressedFormatHeaders: [(offset: Int, bytes: [UInt8])] = [
        (0, [0x1f, 0x8b]), (0, [0x50, 0x4b, 0x03, 0x04]), (0, [0x50, 0x4b, 0x05, 0x06]), (0, [0x50, 0x4b, 0x07, 0x08]),
        (0, [0x89, 0x50, 0x4e, 0x47]), (0, [0xff, 0xd8, 0xff]), (0, Array("GIF8".utf8)), (0, Array("OggS".utf8)), (4, Array("ftyp".utf8)),
        (0, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), (0, Array("BZh".utf8)), (0, [0x28, 0xb5, 0x2f, 0xfd]), (0, [0x37, 0x7a, 0xbc, 0xaf, 0x27, 0x1c]),
        (0, Array("Rar!".utf8)), (0, Array("RIFF".utf8)), (0, [0x1a, 0x45, 0xdf, 0xa3]), (0, Array("fLaC".utf8)), (0, Array("ID3".utf8)),
        (0, Array("%PDF".utf8)),
    ]

    /// Whether `head` (a body's first bytes) starts like a common compressed format. libmagic types these formats,
    /// but a weaker test may win: of 23,293 gzip files in Debian packages, one was typed "DOS/MBR boot sector"
    /// (`application/octet-stream`), its bytes 510 and 511 being 0x55 0xAA by chance. Random bytes start like one
    /// of these with a probability of about 1 in 60,000 (gzip's two bytes, mostly).
    public static func startsLikeCompressedFormat(_ head: [UInt8]) -> Bool {
        Self.compressedFormatHeaders.contains { offset, bytes in
            head.count >= offset + bytes.count && head[offset..<(offset + bytes.count)].elementsEqual(bytes)
        }
    }

    /// The verdict of content of this class under `policy.opaqueContent`: a clean verdict on opaque content is
    /// blocked with ``quarantineReason`` under `quarantine`; every other verdict stands.
    public func verdict(_ verdict: Verdict, policy: AirlockConfiguration.Policy.OpaqueContent) -> Verdict {
        guard self == .opaque, policy == .quarantine, verdict.isClean else { return verdict }
        return .blocked(reason: Self.quarantineReason)
    }
}

/// How often each byte value occurs in a whole body, counted while it is hashed: the statistic that tells random
/// bytes (ciphertext) from everything else, at the cost of one table update per byte.
public struct ByteHistogram: Sendable, Equatable {
    /// Occurrences of each byte value.
    public private(set) var counts: [UInt64]
    /// Bytes counted.
    public private(set) var total: UInt64
    /// The first bytes of the body (up to ``headLength``), for ``ContentClass/startsLikeCompressedFormat(_:)``.
    public private(set) var head: [UInt8] = []

    /// How many first bytes ``head`` keeps.
    public static let headLength = 16

    /// Below this many bytes no body is called random: with 2 KiB each of the 256 values is expected 8 times, above
    /// the 5 the chi-square approximation needs, and the entropy estimate's bias (255 / (2n ln 2) ≈ 0.09 bits) is
    /// small; at 1 KiB neither holds. Smaller bodies are classed by libmagic alone (inspected).
    public static let minimumBytes: UInt64 = 2048
    /// The least entropy, in bits per byte, of a random body: random 2 KiB average 7.91, larger ones more.
    public static let minimumEntropy = 7.8
    /// The range of the chi-square statistic (255 degrees of freedom) random bytes stay in: each bound is exceeded by
    /// random bytes with probability 0.0001 (Wilson–Hilferty). Beyond the upper bound the values are too uneven
    /// (text, headers, most compressed formats at these sizes); below the lower one too even to be chance (a
    /// pattern that repeats every value in turn).
    public static let randomChiSquare = 179.4...347.7

    /// An empty count.
    public init() {
        self.counts = [UInt64](repeating: 0, count: 256)
        self.total = 0
    }

    /// The count of `bytes`.
    public init(_ bytes: UnsafeRawBufferPointer) {
        self.init()
        self.add(bytes)
    }

    /// Counts `bytes` too.
    public mutating func add(_ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        if self.head.count < Self.headLength {
            self.head.append(contentsOf: bytes.prefix(Self.headLength - self.head.count))
        }
        // Four tables, so consecutive equal bytes do not wait on each other's increment; 32-bit counters per chunk
        // of at most 2^32 - 1 bytes, folded into the totals after each chunk.
        var offset = 0
        while offset < bytes.count {
            let chunk = UnsafeRawBufferPointer(rebasing: bytes[offset..<min(bytes.count, offset + Int(UInt32.max))])
            withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 1024) { tables in
                tables.initialize(repeating: 0)
                let count = chunk.count
                var index = 0
                while index + 4 <= count {
                    tables[Int(chunk[index])] &+= 1
                    tables[256 + Int(chunk[index + 1])] &+= 1
                    tables[512 + Int(chunk[index + 2])] &+= 1
                    tables[768 + Int(chunk[index + 3])] &+= 1
                    index += 4
                }
                while index < count {
                    tables[Int(chunk[index])] &+= 1
                    index += 1
                }
                for value in 0..<256 {
                    self.counts[value] &+=
                        UInt64(tables[value]) + UInt64(tables[256 + value]) + UInt64(tables[512 + value])
                        + UInt64(tables[768 + value])
                }
            }
            offset += chunk.count
        }
        self.total &+= UInt64(bytes.count)
    }

    /// Shannon entropy of the byte values, in bits per byte (0 for an empty body).
    public var entropy: Double {
        guard self.total > 0 else { return 0 }
        let total = Double(self.total)
        var entropy = 0.0
        for count in self.counts where count > 0 {
            let p = Double(count) / total
            entropy -= p * log2(p)
        }
        return entropy
    }

    /// Pearson's chi-square statistic of the counts against 256 equally likely values.
    public var chiSquare: Double {
        guard self.total > 0 else { return 0 }
        let expected = Double(self.total) / 256
        return self.counts.reduce(0) { sum, count in
            let difference = Double(count) - expected
            return sum + difference * difference / expected
        }
    }

    /// Whether the body is statistically random: at least ``minimumBytes``, entropy at least ``minimumEntropy`` and
    /// the chi-square statistic within ``randomChiSquare``.
    public var looksRandom: Bool {
        self.total >= Self.minimumBytes && self.entropy >= Self.minimumEntropy && Self.randomChiSquare.contains(self.chiSquare)
    }
}
