import AirlockTestSupport
import Foundation
import Testing

/// Every admin command, run as the real `airlock` binary on a PostgreSQL ledger (`AIRLOCK_LEDGER_BACKEND` and
/// `AIRLOCK_LEDGER_POSTGRESQL_URL`, a fresh database of the private instance `scripts/test` starts): the same
/// scenario as on SQLite, and the same answers. Without the instance, and outside CI, these cases are left out.
@Suite("admin commands on PostgreSQL")
struct PostgresCommandTests {
    /// The environment that puts a fixture's ledger on the PostgreSQL database `url`.
    static func postgresql(_ url: String) -> [String: String] {
        ["AIRLOCK_LEDGER_BACKEND": "postgresql", "AIRLOCK_LEDGER_POSTGRESQL_URL": url]
    }

    /// Every command in turn on `fixture`, with its checks; returns what they said with ids, times and URLs taken
    /// out, to compare the two ledgers' answers line by line.
    static func scenario(_ fixture: AdminFixture) async throws -> [String] {
        var transcript: [String] = []
        let server = try await fixture.startServer()
        let clean = try await fixture.handOff(Data("minutes of the meeting\n".utf8), filename: "minutes.txt", server: server)
        let cleanId = try #require(clean["id"] as? String)
        var ids: [String: String] = [cleanId: "minutes"]
        for name in ["forced", "deleted", "held"] {
            let infected = try await fixture.handOff(Fixtures.eicar, filename: "\(name).com", server: server)
            #expect(infected["state"] as? String == "quarantined")
            ids[try #require(infected["id"] as? String)] = name
        }
        let (forcedId, deletedId, heldId) = try #require(
            { () -> (String, String, String)? in
                let byName = Dictionary(uniqueKeysWithValues: ids.map { ($0.value, $0.key) })
                guard let forced = byName["forced"], let deleted = byName["deleted"], let held = byName["held"] else { return nil }
                return (forced, deleted, held)
            }()
        )
        // A download through the server, so the ledger holds a download row.
        let url = try #require((clean["downloads"] as? [[String: Any]])?.first?["url"] as? String)
        #expect(try await fixture.fetch(url, server: server).0 == "200")
        #expect(await server.stopped() == 0)

        /// `text` with every transfer id replaced by its name.
        func named(_ text: String) -> String {
            ids.reduce(text) { $0.replacingOccurrences(of: $1.key, with: "<\($1.value)>") }
        }
        /// Runs `airlock ARGUMENTS`, records its exit status, and returns the result.
        func run(_ arguments: [String], expect status: Int32 = 0) async throws -> ProcessRunner.Result {
            let result = try await fixture.airlock(arguments)
            #expect(result.status == status, "airlock \(arguments.joined(separator: " ")): \(result.standardError)")
            // Paths, dates and anchors differ from run to run: their places are kept, not their values.
            let stable = arguments.map { argument in
                argument.hasPrefix("/") ? "<path>" : argument.first?.isNumber == true && argument.contains(":") ? "<time or anchor>" : argument
            }
            transcript.append(named("\(stable.joined(separator: " ")) → \(result.status)"))
            return result
        }
        /// Runs `airlock ARGUMENTS --json` and returns it parsed.
        func json(_ arguments: [String], expect status: Int32 = 0) async throws -> Any {
            let result = try await run(arguments + ["--json"], expect: status)
            return try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8))
        }
        /// A transfer document without what differs between two runs (id, time).
        func stable(_ transfer: [String: Any]) -> String {
            let fields = ["filename", "state", "verdict", "signature", "sha256", "size", "sender", "recipients", "detectedType"]
            return named("\(transfer["id"] as? String ?? "")") + " " + fields.map { "\($0)=\(transfer[$0] ?? "-")" }.joined(separator: " ")
        }

        let listed = try await json(["transfers", "list"]) as? [[String: Any]] ?? []
        transcript += listed.map(stable).sorted()
        let shown = try await json(["transfers", "show", cleanId]) as? [String: Any]
        transcript.append(stable(shown?["transfer"] as? [String: Any] ?? [:]))
        #expect((shown?["downloads"] as? [Any])?.count == 1)
        let quarantined = try await json(["quarantine", "list"]) as? [[String: Any]] ?? []
        transcript += quarantined.map(stable).sorted()
        #expect(quarantined.count == 3)
        let table = try await run(["quarantine", "list"])
        #expect(table.standardOutput.contains("Airlock.Test.EICAR"))

        let detail = try await run(["quarantine", "show", heldId])
        #expect(detail.standardOutput.contains("Audit history:"))
        #expect(detail.standardOutput.contains("transfer.created"))
        let rescan = try await run(["quarantine", "rescan", "--all"])
        for id in [forcedId, deletedId, heldId] {
            #expect(rescan.standardError.contains("\(id): Airlock.Test.EICAR"))
        }
        transcript += rescan.standardError.split(separator: "\n").filter { $0.contains("FOUND") }.map { named(String($0)) }.sorted()
        _ = try await run(["quarantine", "rescan", heldId])

        let refused = try await run(["quarantine", "release", forcedId, "--reason", "analyst approved"], expect: 1)
        #expect(refused.standardError.contains("--force"))
        let released = try await run(["quarantine", "release", forcedId, "--reason", "analyst approved", "--force"])
        #expect(released.standardOutput.contains("released \(forcedId)"))
        _ = try await run(["quarantine", "delete", deletedId], expect: 2)
        _ = try await run(["quarantine", "delete", deletedId, "--reason", "malware"])
        #expect(!FileManager.default.fileExists(atPath: "\(fixture.quarantineDirectory)/\(deletedId)"))
        let exported = fixture.directory.file("exported-\(UUID().uuidString).bin")
        _ = try await run(["quarantine", "export", heldId, "--to", exported], expect: 2)
        _ = try await run(["quarantine", "export", heldId, "--to", exported, "--force"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: exported)) == Fixtures.eicar)

        let token = try await json(["token", "issue", cleanId, "--recipient", "bob@example.org", "--ttl", "60"]) as? [String: Any]
        #expect((token?["url"] as? String)?.contains("/v1/files/") == true)
        _ = try await run(["token", "issue", heldId, "--recipient", "bob@example.org"], expect: 2)
        _ = try await run(["transfers", "show", "nope"], expect: 2)

        let anchor = try #require((try await json(["audit", "anchor"]) as? [String: Any])?["anchor"] as? String)
        let verified = try await run(["audit", "verify", "--anchor", anchor])
        #expect(verified.standardOutput.contains("audit log intact"))

        let in31Days = ISO8601DateFormatter().string(from: Date(timeIntervalSinceNow: 31 * 86400))
        let in91Days = ISO8601DateFormatter().string(from: Date(timeIntervalSinceNow: 91 * 86400))
        let dryRun = try await json(["purge", "--dry-run", "--now", in31Days]) as? [[String: Any]] ?? []
        #expect(Set(dryRun.compactMap { $0["id"] as? String }) == [cleanId, forcedId])
        transcript += dryRun.map { named("would purge \($0["id"] ?? "") \($0["previousState"] ?? "")") }.sorted()
        let purged = try await run(["purge", "--now", in31Days])
        #expect(purged.standardOutput.contains("purged 2 transfers"))
        let later = try await json(["purge", "--now", in91Days]) as? [[String: Any]] ?? []
        #expect(later.compactMap { $0["id"] as? String } == [heldId])
        #expect(!FileManager.default.fileExists(atPath: "\(fixture.quarantineDirectory)/\(heldId)"))

        let doctor = try await run(["doctor"])
        #expect(doctor.standardOutput.contains("ledger and disk agree"))
        let audit = try await json(["audit", "list"]) as? [[String: Any]] ?? []
        transcript += audit.map { named("\($0["id"] ?? "") \($0["action"] ?? "") \($0["transferId"] ?? "-")") }
        let intact = try await json(["audit", "verify", "--anchor", anchor]) as? [String: Any]
        #expect(intact?["intact"] as? Bool == true)
        #expect(intact?["entries"] as? Int == audit.count)
        transcript.append("audit entries: \(audit.count)")
        return transcript
    }

    /// Runs `body` with the URL of a fresh database, dropped afterwards whatever happens.
    static func withDatabase(_ body: (String) async throws -> Void) async throws {
        let (url, drop) = try await PostgresTestServer.createDatabase()
        do {
            try await body(url)
        } catch {
            try? await drop()
            throw error
        }
        try await drop()
    }

    @Test(.enabled(if: PostgresTestServer.isAvailable))
    func everyCommandSaysTheSameOnPostgreSQLAsOnSQLite() async throws {
        try await Self.withDatabase { url in
            let fixture = try AdminFixture(extra: Self.postgresql(url))
            let onPostgreSQL = try await Self.scenario(fixture)
            // The ledger was PostgreSQL's: no SQLite file appeared in the data directory.
            #expect(!FileManager.default.fileExists(atPath: fixture.databasePath))
            let onSQLite = try await Self.scenario(try AdminFixture())
            #expect(onPostgreSQL == onSQLite)
        }
    }
}

/// `airlock ledger copy --to CONFIG`: a SQLite ledger built by a real server run, copied into an empty PostgreSQL
/// database, verified there; and its refusals.
@Suite("ledger copy command")
struct LedgerCopyCommandTests {
    /// A configuration file like the shipped one, with its ledger on the PostgreSQL database `url` (or `backend`).
    static func configuration(in fixture: AdminFixture, ledger: [String: Any]) throws -> String {
        let shipped = try Data(contentsOf: Fixtures.packageRoot.appendingPathComponent("Config/airlock.json"))
        var object = try JSONSerialization.jsonObject(with: shipped) as? [String: Any] ?? [:]
        object["ledger"] = ledger
        return try fixture.directory.write("target-\(UUID().uuidString).json", try JSONSerialization.data(withJSONObject: object))
    }

    @Test(.enabled(if: PostgresTestServer.isAvailable))
    func aSQLiteLedgerCopiedIntoPostgreSQLStillVerifies() async throws {
        try await PostgresCommandTests.withDatabase { url in try await Self.copyAndVerify(url) }
    }

    static func copyAndVerify(_ url: String) async throws {
        let fixture = try AdminFixture()
        let server = try await fixture.startServer()
        let clean = try await fixture.handOff(Data("to be moved\n".utf8), filename: "moved.txt", server: server)
        let cleanId = try #require(clean["id"] as? String)
        let url0 = try #require((clean["downloads"] as? [[String: Any]])?.first?["url"] as? String)
        #expect(try await fixture.fetch(url0, server: server).0 == "200")
        let eicarId = try #require(try await fixture.handOff(Fixtures.eicar, filename: "e.com", server: server)["id"] as? String)
        #expect(await server.stopped() == 0)
        #expect(try await fixture.airlock(["token", "issue", cleanId, "--recipient", "bob@example.org"]).status == 0)
        #expect(try await fixture.airlock(["quarantine", "rescan", eicarId]).status == 0)
        let anchor = try #require((try await fixture.json(["audit", "anchor"]) as? [String: Any])?["anchor"] as? String)
        let onSQLite = try await fixture.airlock(["transfers", "list", "--json"])
        let auditOnSQLite = try await fixture.airlock(["audit", "list", "--json"])

        let target = try Self.configuration(in: fixture, ledger: ["backend": "postgresql", "postgresql": ["url": url]])
        let copied = try await fixture.airlock(["ledger", "copy", "--to", target, "--json"])
        #expect(copied.status == 0, "\(copied.standardError)")
        let entries = (try JSONSerialization.jsonObject(with: Data(auditOnSQLite.standardOutput.utf8)) as? [Any])?.count ?? 0
        #expect(entries == 4)
        let lines = ["read 2 transfers", "copied 2 transfers", "copied 2 recipients", "copied 2 token issuances", "copied 1 downloads"]
        for line in lines + ["copied \(entries) audit entries"] {
            #expect(copied.standardError.contains("ledger copy: \(line)"), "\(line) in \(copied.standardError)")
        }
        let report = try #require(try JSONSerialization.jsonObject(with: Data(copied.standardOutput.utf8)) as? [String: Any])
        #expect((report["target"] as? [String: Any])?["transfers"] as? Int == 2)
        #expect((report["auditHead"] as? [String: Any])?["hash"] as? String == String(anchor.split(separator: ":")[1]))

        // On the PostgreSQL side: the chain with the anchor taken on SQLite, the same transfers, the same audit log,
        // and the bytes (shared storage) where the ledger says.
        let onPostgres = ["--config", target]
        let verified = try await fixture.airlock(["audit", "verify", "--anchor", anchor] + onPostgres)
        #expect(verified.status == 0, "\(verified.standardOutput)\(verified.standardError)")
        #expect(verified.standardOutput.contains("anchor \(anchor) found"))
        #expect(try await fixture.airlock(["transfers", "list", "--json"] + onPostgres).standardOutput == onSQLite.standardOutput)
        #expect(try await fixture.airlock(["audit", "list", "--json"] + onPostgres).standardOutput == auditOnSQLite.standardOutput)
        #expect(try await fixture.airlock(["doctor"] + onPostgres).status == 0)

        // A server on the copy goes on: it serves the moved bytes, and its entries chain after the copied ones.
        let serverOnCopy = try await fixture.startServer(extra: PostgresCommandTests.postgresql(url))
        let more = try await fixture.handOff(Data("after the move\n".utf8), filename: "after.txt", server: serverOnCopy)
        #expect(more["state"] as? String == "stored")
        let minted = try await fixture.fetch(
            "/v1/transfers/\(cleanId)/tokens",
            method: "POST",
            body: #"{"recipient":"bob@example.org"}"#,
            server: serverOnCopy
        )
        #expect(minted.0 == "201")
        let mintedURL = try #require((try JSONSerialization.jsonObject(with: minted.1) as? [String: Any])?["url"] as? String)
        let downloaded = try await fixture.fetch(mintedURL, server: serverOnCopy)
        #expect(downloaded.0 == "200")
        #expect(downloaded.1 == Data("to be moved\n".utf8))
        #expect(await serverOnCopy.stopped() == 0)
        #expect(try await fixture.airlock(["audit", "verify", "--anchor", anchor] + onPostgres).status == 0)

        // Refusals, each exit 2 with what to do: a target that holds a ledger, a target that is not PostgreSQL, and
        // the same database on both sides.
        let again = try await fixture.airlock(["ledger", "copy", "--to", target])
        #expect(again.status == 2)
        #expect(again.standardError.contains("the target ledger is not empty"))
        #expect(again.standardError.contains("new, empty database"))
        let sqliteTarget = try Self.configuration(in: fixture, ledger: ["backend": "sqlite"])
        let notPostgres = try await fixture.airlock(["ledger", "copy", "--to", sqliteTarget])
        #expect(notPostgres.status == 2)
        #expect(notPostgres.standardError.contains("does not name a PostgreSQL ledger"))
        let same = try await fixture.airlock(["ledger", "copy", "--to", target, "--config", target])
        #expect(same.status == 2)
        #expect(same.standardError.contains("name the same ledger"))
        let noTarget = try await fixture.airlock(["ledger", "copy"])
        #expect(noTarget.status == 2)
        #expect(noTarget.standardError.contains("--to"))
    }

    @Test func theHelpSaysTheBytesAreNotCopied() async throws {
        let help = try await AirlockCommand.run(["ledger", "copy", "--help"])
        #expect(help.status == 0)
        #expect(help.standardOutput.contains("--to <CONFIG>"))
        #expect(help.standardOutput.contains("The bytes are not copied"))
    }
}
