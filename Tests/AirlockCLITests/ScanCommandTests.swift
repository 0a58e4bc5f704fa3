import AirlockTestSupport
import Foundation
import Testing

@Suite("airlock scan")
struct ScanCommandTests {
    /// Parses `PATH: RESULT` lines into a map, ignoring the summary.
    private func verdicts(_ output: String) -> [String: String] {
        var result: [String: String] = [:]
        for line in output.split(separator: "\n") where line.hasPrefix("/") {
            guard let separator = line.range(of: ": ") else { continue }
            result[String(line[..<separator.lowerBound])] = String(line[separator.upperBound...])
        }
        return result
    }

    /// EICAR built at run time, plain and in archives, plus clean text, an image and random bytes.
    private func makeSamples(in directory: TemporaryDirectory) throws {
        try directory.write("eicar.com", Fixtures.eicar)
        try directory.zip("eicar.zip", members: ["eicar.com"])
        try directory.zip("nested1.zip", members: ["eicar.zip"])
        try directory.zip("nested2.zip", members: ["nested1.zip"])
        try directory.zip("eicar-nested3.zip", members: ["nested2.zip"])
        try directory.tarGzip("eicar.tar.gz", members: ["eicar.com"])
        try FileManager.default.removeItem(atPath: directory.file("nested1.zip"))
        try FileManager.default.removeItem(atPath: directory.file("nested2.zip"))
        try directory.write("clean/notes.txt", Data("Meeting at noon. Bring the slides.\n".utf8))
        try directory.write("clean/pixel.png", Fixtures.png)
        try directory.write("clean/random.bin", Fixtures.randomBytes(count: 256 * 1024, seed: 42))
        for name in try FileManager.default.contentsOfDirectory(atPath: Fixtures.clamAVTestFiles) {
            try FileManager.default.copyItem(atPath: "\(Fixtures.clamAVTestFiles)/\(name)", toPath: directory.file("testfiles/\(name)"))
        }
    }

    @Test func verdictsMatchClamscanFileByFile() async throws {
        let directory = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory.file("testfiles"), withIntermediateDirectories: true)
        try self.makeSamples(in: directory)

        let airlock = try await AirlockCommand.run(["scan", "--no-summary", directory.path])
        let clamscan = try await ProcessRunner.run(
            "/usr/bin/clamscan",
            ["--no-summary", "-r", "-d", Fixtures.signatureDirectory, directory.path]
        )
        #expect(airlock.status == 1, "\(airlock.standardError)")
        #expect(clamscan.status == 1, "\(clamscan.standardError)")
        let ours = self.verdicts(airlock.standardOutput)
        let theirs = self.verdicts(clamscan.standardOutput)
        #expect(ours.count == 44 + 4 + 3)
        #expect(Set(ours.keys) == Set(theirs.keys))
        for (path, verdict) in theirs.sorted(by: { $0.key < $1.key }) {
            #expect(ours[path] == verdict, "\(path)")
        }
        #expect(ours[directory.file("eicar-nested3.zip")]?.hasPrefix("Airlock.Test.EICAR") == true)
        #expect(ours[directory.file("eicar.tar.gz")]?.hasSuffix("FOUND") == true)
        for name in ["notes.txt", "pixel.png", "random.bin"] {
            #expect(ours[directory.file("clean/\(name)")] == "OK")
        }
    }

    @Test func cleanFilesExitZeroAndVerboseShowsTheType() async throws {
        let directory = try TemporaryDirectory()
        let image = try directory.write("pixel.png", Fixtures.png)
        let result = try await AirlockCommand.run(["scan", "--verbose", image])
        #expect(result.status == 0)
        #expect(result.standardOutput.contains("\(image): OK (image/png: PNG image data"))
        #expect(result.standardOutput.contains("Scanned files: 1"))
    }

    @Test func jsonOutputCarriesTheVerdictAndHash() async throws {
        let directory = try TemporaryDirectory()
        let eicar = try directory.write("eicar.com", Fixtures.eicar)
        let result = try await AirlockCommand.run(["scan", "--json", eicar])
        #expect(result.status == 1)
        let parsed = try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [[String: Any]]
        let entry = try #require(parsed?.first)
        #expect(entry["verdict"] as? String == "infected")
        #expect((entry["signature"] as? String)?.hasPrefix("Airlock.Test.EICAR") == true)
        #expect(entry["sha256"] as? String == "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f")
        #expect(entry["size"] as? Int == 68)
    }

    @Test func oversizedBombAndEncryptedFilesAreNeverOK() async throws {
        let directory = try TemporaryDirectory()
        let big = try directory.writeZeros("big.bin", count: 3 << 20)
        let members = try (1...3).map { index in
            try directory.writeZeros("part\(index).bin", count: 3 << 19)
            return "part\(index).bin"
        }
        let bomb = try directory.zip("bomb.zip", members: members)
        try directory.writeZeros("huge.bin", count: 12 << 20)
        let deflated = try directory.zip("deflated.zip", members: ["huge.bin"])
        try directory.write("secret.txt", Data("nothing to see here\n".utf8))
        let encrypted = try directory.zip("secret.zip", members: ["secret.txt"], password: "pw")
        var environment = AirlockCommand.hermetic
        environment["AIRLOCK_SCANNER_MAX_FILE_SIZE"] = "\(2 << 20)"
        environment["AIRLOCK_SCANNER_MAX_SCAN_SIZE"] = "\(4 << 20)"
        let result = try await AirlockCommand.run(["scan", "--no-summary", big, bomb, deflated, encrypted], environment: environment)
        #expect(result.status == 1)
        let verdicts = self.verdicts(result.standardOutput)
        #expect(verdicts.count == 4)
        for path in [big, bomb, deflated, encrypted] {
            #expect(verdicts[path]?.hasSuffix(" UNSCANNABLE") == true, "\(path): \(verdicts[path] ?? "missing")")
        }
    }

    @Test func aPortableExecutableIsBlockedByTheDefaultPolicy() async throws {
        let directory = try TemporaryDirectory()
        let program = try directory.write("setup.exe", Fixtures.portableExecutable)
        let result = try await AirlockCommand.run(["scan", program])
        #expect(result.status == 1)
        #expect(result.standardOutput.contains("\(program): type application/vnd.microsoft.portable-executable is blocked by policy BLOCKED"))
    }

    @Test func aMissingPathIsAnError() async throws {
        let result = try await AirlockCommand.run(["scan", "/nonexistent/file"])
        #expect(result.status == 2)
        #expect(result.standardOutput.contains("/nonexistent/file: No such file or directory ERROR"))
    }
}
