import AirlockTestSupport
import Foundation
import GRDB
import Testing

/// `airlock audit anchor` and `airlock audit verify --anchor`.
@Suite("audit anchors")
struct AuditAnchorTests {
    static func sha256sum(_ text: String, in directory: TemporaryDirectory) async throws -> String {
        let path = try directory.write("canonical-\(UUID().uuidString)", Data(text.utf8))
        let result = try await ProcessRunner.run("/usr/bin/sha256sum", [path])
        return String(result.standardOutput.prefix(64))
    }

    @Test func anAnchorCatchesACutOffTailAndARewrittenHead() async throws {
        let fixture = try AdminFixture()
        let server = try await fixture.startServer()
        let id = try #require(try await fixture.handOff(Data("anchored\n".utf8), filename: "a.txt", server: server)["id"] as? String)
        _ = await server.stopped()
        // The head will be a token issuance: cutting it off leaves no transfer without its creation entry.
        #expect(try await fixture.airlock(["token", "issue", id, "--recipient", "bob@example.org"]).status == 0)

        let anchor = try #require(try await fixture.json(["audit", "anchor"]) as? [String: Any])
        let anchorId = try #require(anchor["id"] as? Int)
        let hash = try #require(anchor["hash"] as? String)
        #expect(anchor["anchor"] as? String == "\(anchorId):\(hash)")
        #expect(anchor["action"] as? String == "token.issued")
        let human = try await fixture.airlock(["audit", "anchor"])
        #expect(human.status == 0)
        #expect(human.standardOutput.hasPrefix("\(anchorId):\(hash)\n"))
        let intact = try await fixture.airlock(["audit", "verify", "--anchor", "\(anchorId):\(hash.uppercased())"])
        #expect(intact.status == 0, "\(intact.standardOutput)")
        #expect(intact.standardOutput.contains("anchor \(anchorId):\(hash) found"))

        /// Applies `tamper` to a copy of the ledger; returns `audit verify` without and with the anchor.
        func verify(after tamper: @escaping @Sendable (Database) throws -> Void) async throws -> (
            plain: ProcessRunner.Result, anchored: ProcessRunner.Result
        ) {
            let copy = try TemporaryDirectory()
            try FileManager.default.copyItem(atPath: fixture.databasePath, toPath: copy.file("airlock.sqlite"))
            let queue = try DatabaseQueue(path: copy.file("airlock.sqlite"))
            try await queue.write { db in
                try db.execute(sql: "DROP TRIGGER auditLogNoUpdate; DROP TRIGGER auditLogNoDelete;")
                try tamper(db)
            }
            try queue.close()
            let environment = ["AIRLOCK_STORAGE_DATA_DIRECTORY": copy.path]
            return (
                try await fixture.airlock(["audit", "verify"], extra: environment),
                try await fixture.airlock(["audit", "verify", "--anchor", "\(anchorId):\(hash)"], extra: environment)
            )
        }

        // The tail cut off: the chain that remains is consistent, so only the anchor notices.
        let cut = try await verify { db in try db.execute(sql: "DELETE FROM audit_log WHERE id = ?", arguments: [anchorId]) }
        #expect(cut.plain.status == 0)
        #expect(cut.anchored.status == 1)
        #expect(cut.anchored.standardOutput.contains("entry \(anchorId): the anchored entry is missing"))

        // The head rewritten with a hash that fits its new content (as whoever can write the ledger could).
        let original = try DatabaseQueue(path: fixture.databasePath)
        let head = try original.read { db in try Row.fetchOne(db, sql: "SELECT * FROM audit_log WHERE id = ?", arguments: [anchorId]) }
        try original.close()
        let row = try #require(head)
        let forgedDetails = #"{"recipient":"mallory@example.org"}"#
        let at: Date = row["at"]
        let fields: [String] = [
            row["previousHash"], String(anchorId), String(Int64((at.timeIntervalSince1970 * 1000).rounded())), row["actor"], row["action"],
            (row["transferId"] as String?) ?? "", forgedDetails,
        ]
        let forgedHash = try await Self.sha256sum(fields.map { "\($0.utf8.count):\($0)" }.joined(separator: "|"), in: fixture.directory)
        let rewritten = try await verify { db in
            try db.execute(sql: "UPDATE audit_log SET details = ?, hash = ? WHERE id = ?", arguments: [forgedDetails, forgedHash, anchorId])
        }
        #expect(rewritten.plain.status == 0, "\(rewritten.plain.standardOutput)")
        #expect(rewritten.anchored.status == 1)
        #expect(rewritten.anchored.standardOutput.contains("entry \(anchorId): its hash \(forgedHash) is not the anchor's \(hash)"))

        // Malformed anchors are usage errors.
        for malformed in ["12", "x:\(hash)", "0:\(hash)", "3:abc", "3:\(String(repeating: "g", count: 64))", "3:\(hash):4"] {
            let result = try await fixture.airlock(["audit", "verify", "--anchor", malformed])
            #expect(result.status == 2, "\(malformed)")
            #expect(result.standardError.contains("--anchor must be ID:HASH"), "\(malformed)")
        }
    }
}
