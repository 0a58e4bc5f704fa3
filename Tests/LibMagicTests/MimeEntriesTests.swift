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

    @Test func answersRandomBytesAlone() throws {
        let pool = try MagicPool()
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20 {
            let bytes = (0..<8192).map { _ in UInt8.random(in: 0...255, using: &generator) }
            #expect(try bytes.withUnsafeBytes { try pool.identify($0, describe: false) }.mimeType == "application/octet-stream")
        }
        #expect(pool.firstPassAnswerCount == 20)
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
            #expect(pool.firstPassAnswerCount == 0)
        }
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
        var generator = SystemRandomNumberGenerator()
        for length in [0, 1, 2, 3, 100, 8192] {
            inputs.append(("\(length) random bytes", (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }))
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
