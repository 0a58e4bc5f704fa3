import AirlockTestSupport
import Foundation
import Testing

@Suite("start-up errors exit 2 with a clear message")
struct StartupErrorTests {
    private func scanSample(environment: [String: String], arguments: [String] = []) async throws -> ProcessRunner.Result {
        let directory = try TemporaryDirectory()
        let sample = try directory.write("note.txt", Data("hello\n".utf8))
        return try await AirlockCommand.run(["scan"] + arguments + [sample], environment: environment)
    }

    @Test func aMissingSignatureDirectory() async throws {
        let result = try await self.scanSample(environment: ["AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES": "/nonexistent/signatures"])
        #expect(result.status == 2)
        #expect(result.standardError.contains("no signatures loaded"))
        #expect(result.standardError.contains("/nonexistent/signatures"))
        #expect(result.standardOutput.isEmpty)
    }

    /// `airlock scan` makes a scratch directory for its scanner process under `$TMPDIR`: a start that fails removes it.
    @Test func aFailedStartLeavesNoScratchDirectory() async throws {
        let temporary = try TemporaryDirectory()
        let result = try await self.scanSample(environment: [
            "AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES": "/nonexistent/signatures", "TMPDIR": temporary.path,
        ])
        #expect(result.status == 2)
        #expect(try FileManager.default.contentsOfDirectory(atPath: temporary.path).isEmpty)
    }

    @Test func anEmptySignatureDirectory() async throws {
        let empty = try TemporaryDirectory()
        let result = try await self.scanSample(environment: ["AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES": empty.path])
        #expect(result.status == 2)
        #expect(result.standardError.contains("no signatures loaded"))
    }

    @Test func aCorruptSignatureFileIsNamed() async throws {
        let signatures = try TemporaryDirectory()
        try signatures.write("fine.ndb", Data("Fine.Sig:0:*:41424344454647\n".utf8))
        let broken = try signatures.write("broken.hdb", Data("not-a-hash:xyz\n".utf8))
        let result = try await self.scanSample(environment: ["AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES": signatures.path])
        #expect(result.status == 2)
        #expect(result.standardError.contains("\(broken) is corrupt"))
    }

    @Test func aMalformedConfigurationFile() async throws {
        let directory = try TemporaryDirectory()
        let config = try directory.write("airlock.json", Data(#"{"scanner": {"workers": 2,, }"#.utf8))
        let result = try await self.scanSample(environment: AirlockCommand.hermetic, arguments: ["--config", config])
        #expect(result.status == 2)
        #expect(result.standardError.contains("\(config) is not valid JSON"))
    }

    @Test func anInvalidValueNamesItsKey() async throws {
        var environment = AirlockCommand.hermetic
        environment["AIRLOCK_SCANNER_MAX_RECURSION"] = "lots"
        let result = try await self.scanSample(environment: environment)
        #expect(result.status == 2)
        #expect(result.standardError.contains("scanner.maxRecursion"))
        #expect(result.standardError.contains("AIRLOCK_SCANNER_MAX_RECURSION"))
    }

    @Test func aMissingConfigurationFile() async throws {
        let result = try await self.scanSample(environment: AirlockCommand.hermetic, arguments: ["--config", "/nonexistent.json"])
        #expect(result.status == 2)
        #expect(result.standardError.contains("/nonexistent.json"))
    }

    @Test func aUsageErrorExitsTwo() async throws {
        let result = try await AirlockCommand.run(["scan"])
        #expect(result.status == 2)
        #expect(result.standardError.contains("Name at least one file or directory") || result.standardError.contains("Missing expected argument"))
    }
}
