import AirlockTestSupport
import Foundation
import GRDB
import Testing

/// Human output never prints control or format characters raw.
@Suite("escaped output")
struct EscapedOutputTests {
    @Test func humanOutputEscapesControlAndFormatCharacters() async throws {
        let fixture = try AdminFixture()
        let server = try await fixture.startServer()
        let cleanId = try #require(try await fixture.handOff(Data("hello\n".utf8), filename: "hello.txt", server: server)["id"] as? String)
        let heldId = try #require(try await fixture.handOff(Fixtures.eicar, filename: "held.com", server: server)["id"] as? String)
        _ = await server.stopped()
        // Rows written before the server refused such names (or by whatever else writes the ledger).
        let queue = try DatabaseQueue(path: fixture.databasePath)
        try await queue.write { db in
            try db.execute(
                sql: "UPDATE transfer SET filename = ?, originalFilename = ?, sender = ?",
                arguments: ["invoice\u{202E}fdp.js", "invoice\u{202E}fdp.js", "alice\u{200B}@example.org\u{1B}[2J"]
            )
        }
        try queue.close()
        // An export path with an override reaches the audit log's details.
        let sneaky = fixture.directory.file("report\u{202E}txt.exe")
        #expect(try await fixture.airlock(["quarantine", "export", heldId, "--to", sneaky, "--force"]).status == 0)

        let outputs = [
            try await fixture.airlock(["transfers", "list"]), try await fixture.airlock(["transfers", "show", cleanId]),
            try await fixture.airlock(["quarantine", "list"]), try await fixture.airlock(["quarantine", "show", heldId]),
        ]
        for output in outputs {
            #expect(output.status == 0)
            #expect(output.standardOutput.contains(#"invoice\u{202E}fdp.js"#))
            #expect(output.standardOutput.contains(#"alice\u{200B}@example.org\u{1B}[2J"#))
        }
        let audit = try await fixture.airlock(["audit", "list"])
        #expect(audit.standardOutput.contains(#"report\u{202E}txt.exe"#))
        for output in outputs + [audit] {
            #expect(!output.standardOutput.unicodeScalars.contains { ["\u{202E}", "\u{200B}", "\u{1B}"].contains($0) })
        }
        // JSON is for programs: the values are exact there.
        let json = try await fixture.json(["transfers", "show", cleanId]) as? [String: Any]
        #expect((json?["transfer"] as? [String: Any])?["filename"] as? String == "invoice\u{202E}fdp.js")
    }
}
