import AirlockCore
import AirlockTestSupport
import Foundation
import LibMagic
import Logging
import Testing

@Suite("inspection pipeline", .serialized)
final class InspectorTests {
    let inspector: Inspector
    let directory: TemporaryDirectory

    init() async throws {
        var configuration = AirlockConfiguration.development
        configuration.scanner.signatureDirectories = [Fixtures.signatureDirectory]
        configuration.scanner.maxFileSize = 2 << 20
        configuration.scanner.maxScanSize = 4 << 20
        configuration.scanner.workers = 4
        // No blocked types: a block must come from the declared/detected mismatch alone.
        configuration.policy.blockedTypes = []
        let directory = try TemporaryDirectory()
        // The scanner's scratch directory inside the test's own, which goes with it (the asynchronous shutdown in
        // deinit may not run before the test process exits).
        self.inspector = try await Inspector.start(
            configuration: configuration,
            temporaryDirectory: directory.file("scanning"),
            logger: Logger(label: "test")
        )
        self.directory = directory
    }

    deinit {
        let inspector = self.inspector
        Task { try? await inspector.shutdown() }
    }

    @Test func reportsSizeHashTypeAndACleanVerdict() async throws {
        let path = try self.directory.write("image.png", Fixtures.png)
        let report = await self.inspector.inspect(fileAt: path, declaredType: "image/png")
        #expect(report.verdict == .clean)
        #expect(report.size == Int64(Fixtures.png.count))
        #expect(report.detectedType?.mimeType == "image/png")
        // The hash is checked against an independent implementation.
        let sha256sum = try await ProcessRunner.run("/usr/bin/sha256sum", [path])
        #expect(report.sha256 == String(sha256sum.standardOutput.prefix(64)))
    }

    @Test func eicarIsInfected() async throws {
        let report = await self.inspector.inspect(fileAt: try self.directory.write("eicar.txt", Fixtures.eicar), declaredType: "text/plain")
        #expect(report.verdict.kind == .infected)
        #expect(report.verdict.signature?.hasPrefix("Airlock.Test.EICAR") == true)
    }

    @Test func anExecutableDeclaredAsJPEGIsBlockedWithoutASignature() async throws {
        let path = try self.directory.write("holiday.jpg", Fixtures.portableExecutable)
        let report = await self.inspector.inspect(fileAt: path, declaredType: "image/jpeg")
        #expect(report.verdict.kind == .blocked)
        #expect(report.verdict.signature == nil)
        #expect(report.verdict.reason?.hasPrefix("type mismatch: declared image/jpeg") == true)
        // Without a declared type the same bytes are not blocked by this policy (no blocked types).
        let undeclared = await self.inspector.inspect(fileAt: path)
        #expect(undeclared.verdict.kind != .blocked)
    }

    @Test func aFileOverMaxFileSizeIsUnscannable() async throws {
        let path = try self.directory.writeZeros("big.bin", count: 3 << 20)
        let report = await self.inspector.inspect(fileAt: path)
        #expect(report.verdict.kind == .unscannable)
        #expect(report.sha256 != nil)
    }

    @Test func archiveBombsAndEncryptedArchivesAreUnscannable() async throws {
        let members = try (1...3).map { index in
            try self.directory.writeZeros("part\(index).bin", count: 3 << 19)
            return "part\(index).bin"
        }
        let bomb = await self.inspector.inspect(fileAt: try self.directory.zip("bomb.zip", members: members))
        #expect(bomb.verdict.kind == .unscannable)

        try self.directory.write("secret.txt", Data("nothing to see here\n".utf8))
        let encrypted = await self.inspector.inspect(fileAt: try self.directory.zip("secret.zip", members: ["secret.txt"], password: "pw"))
        #expect(encrypted.verdict.kind == .unscannable)
    }

    @Test func anUnreadablePathIsUnscannableNotClean() async {
        let report = await self.inspector.inspect(fileAt: self.directory.file("does-not-exist"))
        #expect(report.verdict.kind == .unscannable)
        let directoryReport = await self.inspector.inspect(fileAt: self.directory.path)
        #expect(directoryReport.verdict == .unscannable(reason: "not a regular file"))
    }

    @Test func sixteenConcurrentInspectionsAgreeWithSequentialOnes() async throws {
        var paths = try FileManager.default.contentsOfDirectory(atPath: Fixtures.clamAVTestFiles).sorted().prefix(12)
            .map { "\(Fixtures.clamAVTestFiles)/\($0)" }
        paths.append(try self.directory.write("e.com", Fixtures.eicar))
        paths.append(try self.directory.write("note.txt", Data("hi\n".utf8)))
        paths.append(try self.directory.write("p.png", Fixtures.png))
        paths.append(try self.directory.write("r.bin", Fixtures.randomBytes(count: 100_000, seed: 9)))
        #expect(paths.count == 16)
        var sequential: [InspectionReport] = []
        for path in paths {
            sequential.append(await self.inspector.inspect(fileAt: path))
        }
        let inspector = self.inspector
        let concurrent = await withTaskGroup(of: (Int, InspectionReport).self) { group in
            for (index, path) in paths.enumerated() {
                group.addTask { (index, await inspector.inspect(fileAt: path)) }
            }
            var results = [InspectionReport?](repeating: nil, count: paths.count)
            for await (index, report) in group {
                results[index] = report
            }
            return results
        }
        #expect(concurrent == sequential)
        #expect(sequential.filter { $0.verdict.kind == .infected }.count == 13)
    }
}
