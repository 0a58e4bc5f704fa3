import AirlockTestSupport
import Foundation
import Testing

/// `airlock quarantine export`: never overwrites or follows a link, 0600 whatever the umask, audited before writing.
@Suite("export command")
struct ExportCommandTests {
    /// Runs `airlock ARGUMENTS` under `umask MASK`, as an admin's shell would.
    static func airlock(_ fixture: AdminFixture, umask mask: String, _ arguments: [String]) async throws -> ProcessRunner.Result {
        try await ProcessRunner.run(
            "/bin/sh",
            ["-c", "umask \(mask) && exec \"$0\" \"$@\"", AirlockCommand.executable] + arguments,
            in: Fixtures.packageRoot.path,
            environment: fixture.environment
        )
    }

    @Test func exportRefusesExistingFilesAndLinksAndAuditsBeforeWriting() async throws {
        let fixture = try AdminFixture()
        let server = try await fixture.startServer()
        let id = try #require(try await fixture.handOff(Fixtures.eicar, filename: "eicar.com", server: server)["id"] as? String)
        _ = await server.stopped()

        // An existing file: refused, untouched, and the message says what to do.
        let existing = try fixture.directory.write("existing.bin", Data("analyst notes".utf8))
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: existing)
        let overwrite = try await fixture.airlock(["quarantine", "export", id, "--to", existing, "--force"])
        #expect(overwrite.status == 2)
        #expect(overwrite.standardError.contains("already exists"))
        #expect(overwrite.standardError.contains("choose a new path, or remove the existing one first"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: existing)) == Data("analyst notes".utf8))

        // A symbolic link, to a file or to nowhere: refused, its target untouched or never created.
        let target = try fixture.directory.write("victim.conf", Data("do not touch".utf8))
        let link = fixture.directory.file("link.bin")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        let dangling = fixture.directory.file("dangling.bin")
        let nowhere = fixture.directory.file("created-through-the-link")
        try FileManager.default.createSymbolicLink(atPath: dangling, withDestinationPath: nowhere)
        for path in [link, dangling] {
            let followed = try await fixture.airlock(["quarantine", "export", id, "--to", path, "--force"])
            #expect(followed.status == 2, "\(path)")
            #expect(followed.standardError.contains("symbolic link"), "\(path)")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: target)) == Data("do not touch".utf8))
        #expect(!FileManager.default.fileExists(atPath: nowhere))
        // Nothing was decrypted, so nothing was audited.
        #expect(try await fixture.auditEntries(action: "quarantine.exported").isEmpty)

        // A new path: 0600 under the usual umask, the bytes exact, the export audited.
        let exported = fixture.directory.file("exported.bin")
        let done = try await Self.airlock(fixture, umask: "022", ["quarantine", "export", id, "--to", exported, "--force"])
        #expect(done.status == 0, "\(done.standardError)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: exported)) == Fixtures.eicar)
        #expect(try FileManager.default.attributesOfItem(atPath: exported)[.posixPermissions] as? Int == 0o600)
        let exports = try await fixture.auditEntries(action: "quarantine.exported")
        #expect(exports.count == 1)
        #expect(exports.first?.details["to"] == exported)
        #expect(exports.first?.entry["actor"] as? String == "admin:\(AdminFixture.operatingSystemUser)")
        #expect(exports.first?.entry["transferId"] as? String == id)

        // Decryption fails after the audit entry is written: the attempt stays recorded, the partial file goes.
        let quarantined = fixture.quarantineDirectory + "/" + id
        let encrypted = try Data(contentsOf: URL(fileURLWithPath: quarantined))
        try encrypted.dropLast(1).write(to: URL(fileURLWithPath: quarantined))
        let partial = fixture.directory.file("partial.bin")
        let failed = try await fixture.airlock(["quarantine", "export", id, "--to", partial, "--force"])
        #expect(failed.status == 2)
        #expect(failed.standardError.contains("the partial file \(partial) was removed"))
        #expect(!FileManager.default.fileExists(atPath: partial))
        #expect(try await fixture.auditEntries(action: "quarantine.exported").map { $0.details["to"] } == [exported, partial])
        #expect(try await fixture.airlock(["audit", "verify"]).status == 0)
    }
}
