import AirlockTestSupport
import Foundation
import Testing

@testable import LibMagic

/// The first pass of type detection (``MagicPool/TypeDetection/mimeEntriesFirst``): the entries of libmagic's own
/// database that can print a MIME type, and the promise that the pool's MIME types stay those of the whole database.
@Suite("libmagic first pass")
struct MimeEntriesTests {
    @Test func isDerivedFromTheSystemDatabaseAndKeepsFewerEntries() throws {
        let entries = try MimeEntries.derive().get()
        #expect(entries.totalEntries > 10_000)
        #expect(entries.keptEntries > 1_000)
        #expect(entries.keptEntries < entries.totalEntries * 3 / 4)
        let pool = try MagicPool()
        #expect(pool.usesFirstPass, "\(pool.typeDetection)")
        #expect(try MagicPool(detection: .wholeDatabase).usesFirstPass == false)
    }

    /// Random bytes: what the first pass is for. About 1 in 70 random bodies has a type for libmagic (a DOS
    /// executable, zlib data: a short test that happens to match), which the whole database gives. Seeded, so that
    /// every run types the same bodies.
    @Test func answersRandomBytesAlone() throws {
        let pool = try MagicPool()
        let whole = try MagicPool(detection: .wholeDatabase)
        var untyped = 0
        for seed in 100..<150 {
            let bytes = [UInt8](Fixtures.randomBytes(count: 8192, seed: UInt64(seed)))
            let expected = try bytes.withUnsafeBytes { try whole.identify($0, describe: false) }.mimeType
            #expect(try bytes.withUnsafeBytes { try pool.identify($0, describe: false) }.mimeType == expected)
            if expected == "application/octet-stream" { untyped += 1 }
        }
        #expect(untyped > 40)
        #expect(pool.firstPassAnswerCount == untyped)
    }

    /// A Python module that starts with its docstring: an entry without a MIME type ("Python script") matches it
    /// first in the whole database, so `file --mime-type` says text/plain; the derived entries alone would say
    /// text/x-script.python. The pool must say what the whole database says.
    @Test func asksTheWholeDatabaseWhenTheDerivedEntriesWouldDiffer() throws {
        let source = Array(
            """
            \"\"\"
            Example module.
            ~~~~~~~~~~~~~~~

            A docstring first, as many modules have.
            \"\"\"

            import importlib
            import sys


            def resolve():
                \"\"\"Find something.\"\"\"
                return None

            """.utf8
        )
        let derived = try MagicHandle(databases: MagicDatabases(try MimeEntries.derive().get().databases))
        let whole = try MagicHandle()
        try source.withUnsafeBytes { bytes in
            #expect(try derived.identify(bytes, describe: false).mimeType == "text/x-script.python")
            #expect(try whole.identify(bytes, describe: false).mimeType == "text/plain")
            let pool = try MagicPool()
            #expect(try pool.identify(bytes, describe: false).mimeType == "text/plain")
            // Text goes to the whole database at once.
            #expect(pool.firstPassTryCount == 0)
        }
    }

    /// Binary bytes the derived entries type but the whole database does not: these random bytes start like ttcomp
    /// compressed data for an entry that names a MIME type, and an entry without one matches them first in the
    /// whole database. The first pass is tried, and its answer is not the pool's.
    @Test func asksTheWholeDatabaseWhenTheFirstPassFindsAType() throws {
        let bytes = [UInt8](Fixtures.randomBytes(count: 8192, seed: 2445))
        let derived = try MagicHandle(databases: MagicDatabases(try MimeEntries.derive().get().databases))
        let pool = try MagicPool()
        try bytes.withUnsafeBytes { bytes throws in
            #expect(try derived.identify(bytes, describe: false).mimeType == "application/x-compress-ttcomp")
            #expect(try pool.identify(bytes, describe: false).mimeType == "application/octet-stream")
            #expect(try MagicPool(detection: .wholeDatabase).identify(bytes, describe: false).mimeType == "application/octet-stream")
        }
        #expect(pool.firstPassTryCount == 1)
        #expect(pool.firstPassAnswerCount == 0)
    }

    /// The start-up self-check means something only if the whole database types its samples.
    @Test func theStartUpSamplesHaveTypes() throws {
        let whole = try MagicPool(detection: .wholeDatabase)
        for sample in MagicSamples.all {
            let type = try sample.bytes.withUnsafeBytes { try whole.identify($0, describe: false) }.mimeType
            #expect(type != "application/octet-stream", "\(sample.name)")
        }
    }

    /// Entries that name application/octet-stream themselves print another name in the derived copy.
    @Test func entriesNamingNoTypeAreRenamed() throws {
        let databases = try MimeEntries.derive().get().databases
        let untyped = MimeEntries.untypedField
        var renamed = 0
        for database in databases {
            for entry in 1..<(database.count / MimeEntries.entrySize) {
                let field = entry * MimeEntries.entrySize + MimeEntries.mimeTypeOffset
                #expect(!database[field..<(field + untyped.count)].elementsEqual(untyped))
                if database[field..<(field + MimeEntries.renamedUntyped.count)].elementsEqual(MimeEntries.renamedUntyped) { renamed += 1 }
            }
        }
        #expect(renamed > 0)
    }

    /// DESIGN §7: a cheaper libmagic configuration only where a corpus of real files shows the same MIME types. The
    /// corpus is this machine's own files (programs, libraries, documentation, images, scripts, archives), every
    /// one typed from its first 16 KiB both ways, with the start-up samples and short and random bytes beside them.
    @Test func givesTheWholeDatabasesTypesOnTheFilesOfThisMachine() throws {
        let firstPass = try MagicPool()
        let whole = try MagicPool(detection: .wholeDatabase)
        var inputs: [(String, [UInt8])] = MagicSamples.all.flatMap { sample in
            [1, 2, 4, 8, 16, 64, sample.bytes.count].map { ("\(sample.name), first \($0) bytes", Array(sample.bytes.prefix($0))) }
        }
        for length in [0, 1, 2, 3, 100, 8192] {
            inputs.append(("\(length) random bytes", [UInt8](Fixtures.randomBytes(count: length, seed: UInt64(length) + 1))))
        }
        for path in Self.corpus(limit: 1_500) {
            guard let handle = FileHandle(forReadingAtPath: path) else { continue }
            defer { try? handle.close() }
            guard let data = try? handle.read(upToCount: 16 * 1024) else { continue }
            inputs.append((path, Array(data)))
        }
        #expect(inputs.count > 1_000)

        var mismatches: [String] = []
        var types: Set<String> = []
        for (name, bytes) in inputs {
            let (expected, actual) = try bytes.withUnsafeBytes { bytes in
                (try whole.identify(bytes, describe: false).mimeType, try firstPass.identify(bytes, describe: false).mimeType)
            }
            types.insert(expected)
            if expected != actual { mismatches.append("\(name): \(actual), whole database \(expected)") }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(20))")
        // The corpus is varied enough to mean something, and the first pass did answer part of it.
        #expect(types.count >= 15, "\(types.sorted())")
        #expect(firstPass.firstPassAnswerCount > 10)
    }

    /// Known headers and text go to the whole database at once: the first pass could only send them there.
    @Test func skipsTheFirstPassForKnownHeadersAndText() throws {
        let headers = try MimeEntries.derive().get().knownHeaders
        #expect(headers.count > 100)
        let pool = try MagicPool()
        let random = [UInt8](Fixtures.randomBytes(count: 4096, seed: 7))
        let inputs: [(bytes: [UInt8], known: Bool)] = [
            ([0xFF, 0xD8, 0xFF, 0xE0] + random, true),  // JPEG
            ([0x89] + Array("PNG\r\n".utf8) + [0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D] + Array("IHDR".utf8) + random, true),
            (Array("%PDF-1.7\n".utf8) + random, true),
            ([0x7F] + Array("ELF".utf8) + random, true),
            ([0x00, 0x00, 0x00, 0x18] + Array("ftypmp42".utf8) + random, true),  // MP4, at offset 4
            (random, false),
        ]
        for input in inputs {
            #expect(input.bytes.withUnsafeBytes { headers.match($0) } == input.known)
        }
        for input in inputs {
            _ = try input.bytes.withUnsafeBytes { try pool.identify($0, describe: false) }
        }
        _ = try Array("plain words, and more of them\n".utf8).withUnsafeBytes { try pool.identify($0, describe: false) }
        #expect(pool.firstPassTryCount == 1)
        #expect(pool.firstPassAnswerCount == 1)
    }

    @Test func refusesADatabaseOfAnotherFormat() throws {
        let path = "/usr/share/misc/magic.mgc"
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(MimeEntries.reduce(bytes) != nil)
        var otherVersion = bytes
        otherVersion[4] = 17
        #expect(MimeEntries.reduce(otherVersion) == nil)
        #expect(MimeEntries.reduce(Array(bytes.dropLast(100))) == nil)
        var otherCount = bytes
        otherCount[8] &+= 1
        #expect(MimeEntries.reduce(otherCount) == nil)
        #expect(MimeEntries.reduce([]) == nil)
    }

    @Test func aLocalSourceFileWithEntriesTurnsTheFirstPassOff() {
        #expect(!MimeEntries.hasEntries(source: Array("# Magic local data for file(1)\n#\n\n   \n".utf8)))
        #expect(MimeEntries.hasEntries(source: Array("# local\n0\tstring\tACME\tACME archive\n".utf8)))
    }

    /// Regular files under the system's directories, in a fixed order, spread evenly over `limit` picks.
    private static func corpus(limit: Int) -> [String] {
        var paths: [String] = []
        for root in ["/usr/bin", "/usr/lib", "/usr/share", "/etc"] {
            guard let enumerator = FileManager.default.enumerator(atPath: root) else { continue }
            while let relative = enumerator.nextObject() as? String {
                let path = root + "/" + relative
                guard let attributes = enumerator.fileAttributes,
                    attributes[.type] as? FileAttributeType == .typeRegular,
                    (attributes[.size] as? NSNumber)?.intValue ?? 0 > 0
                else { continue }
                paths.append(path)
            }
        }
        paths.sort()
        let step = max(1, paths.count / limit)
        return stride(from: 0, to: paths.count, by: step).map { paths[$0] }
    }
}
