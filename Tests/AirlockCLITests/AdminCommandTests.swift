import AirlockTestSupport
import Foundation
import GRDB
import Testing

@Suite("admin commands")
struct AdminCommandTests {
    @Test func releaseWhileTheServerIsServing() async throws {
        // The server scans with a 1 KiB file limit, so a 4 KiB note is unscannable and quarantined; the admin's
        // rescan runs with the default limits and finds it clean.
        let fixture = try AdminFixture()
        let server = try await fixture.startServer(extra: ["AIRLOCK_SCANNER_MAX_FILE_SIZE": "1024", "AIRLOCK_SCANNER_MAX_SCAN_SIZE": "4096"])
        let note = Data(String(repeating: "All quiet on the western front. ", count: 128).utf8)
        let held = try await fixture.handOff(note, filename: "note.txt", server: server)
        let eicar = try await fixture.handOff(Fixtures.eicar, filename: "eicar.com", server: server)
        let heldId = try #require(held["id"] as? String)
        let eicarId = try #require(eicar["id"] as? String)
        #expect(held["verdict"] as? String == "unscannable")
        #expect(held["state"] as? String == "quarantined")

        let listed = try await fixture.json(["quarantine", "list"]) as? [[String: Any]]
        #expect(Set(listed?.compactMap { $0["id"] as? String } ?? []) == [heldId, eicarId])
        let table = try await fixture.airlock(["quarantine", "list"])
        #expect(table.standardOutput.contains("ID"))
        #expect(table.standardOutput.contains("unscannable: file is 4096 bytes"))

        // The server refuses to mint a URL while it is quarantined.
        let refused = try await fixture.fetch(
            "/v1/transfers/\(heldId)/tokens",
            method: "POST",
            body: #"{"recipient":"bob@example.org"}"#,
            server: server
        )
        #expect(refused.0 == "409")

        let noReason = try await fixture.airlock(["quarantine", "release", heldId])
        #expect(noReason.status == 2)
        #expect(noReason.standardError.contains("--reason"))

        let released = try await fixture.airlock(["quarantine", "release", heldId, "--reason", "checked by hand"])
        #expect(released.status == 0, "\(released.standardError)")
        #expect(released.standardOutput.contains("released \(heldId)"))

        // No restart: the running server mints a fresh URL, and it downloads the same bytes.
        let minted = try await fixture.fetch(
            "/v1/transfers/\(heldId)/tokens",
            method: "POST",
            body: #"{"recipient":"bob@example.org"}"#,
            server: server
        )
        #expect(minted.0 == "201")
        let url = try #require((try JSONSerialization.jsonObject(with: minted.1) as? [String: Any])?["url"] as? String)
        let downloaded = try await fixture.fetch(url, server: server)
        #expect(downloaded.0 == "200")
        #expect(downloaded.1 == note)
        #expect(!FileManager.default.fileExists(atPath: fixture.quarantineDirectory + "/" + heldId))

        // EICAR is still detected: refused without --force (exit 1), released with it.
        let stillInfected = try await fixture.airlock(["quarantine", "release", eicarId, "--reason", "false positive?"])
        #expect(stillInfected.status == 1)
        #expect(stillInfected.standardError.contains("--force"))
        let forced = try await fixture.airlock(["quarantine", "release", eicarId, "--reason", "analyst approved", "--force"])
        #expect(forced.status == 0)

        // The audit log records who, why, with which signatures and what the rescan found.
        let audit = try await fixture.json(["audit", "list"]) as? [[String: Any]] ?? []
        let releases = audit.filter { $0["action"] as? String == "quarantine.released" }
        #expect(releases.count == 2)
        let user = ProcessInfo.processInfo.environment["SUDO_USER"] ?? NSUserName()
        for entry in releases {
            #expect(entry["actor"] as? String == "admin:\(user)")
            let details = try JSONSerialization.jsonObject(with: Data((entry["details"] as? String ?? "").utf8)) as? [String: String]
            #expect(details?["signatureVersion"]?.isEmpty == false)
            #expect(details?["reason"] != nil)
        }
        let forcedDetails = try #require(releases.last?["details"] as? String)
        #expect(forcedDetails.contains(#""verdict":"infected""#))
        #expect(forcedDetails.contains(#""forced":"true""#))
        #expect(try await fixture.airlock(["audit", "verify"]).status == 0)
        #expect(await server.stopped() == 0)
    }

    @Test func aFileInfectedAtHandOffNeedsForceEvenWhenNowClean() async throws {
        let fixture = try AdminFixture()
        let server = try await fixture.startServer()
        let id = try #require(try await fixture.handOff(Fixtures.eicar, filename: "e.com", server: server)["id"] as? String)
        _ = await server.stopped()
        // Signatures without the EICAR pattern: the rescan finds the file clean.
        let signatures = try TemporaryDirectory()
        let clamOnly =
            try String(contentsOfFile: Fixtures.signatureDirectory + "/airlock-test.ndb", encoding: .utf8)
            .split(separator: "\n").filter { $0.hasPrefix("Airlock.Test.ClamExe") }.joined(separator: "\n") + "\n"
        try signatures.write("airlock-test.ndb", Data(clamOnly.utf8))
        let other = ["AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES": signatures.path]
        let refused = try await fixture.airlock(["quarantine", "release", id, "--reason", "signatures changed"], extra: other)
        #expect(refused.status == 1)
        #expect(refused.standardError.contains("was infected at hand-off"))
        let forced = try await fixture.airlock(["quarantine", "release", id, "--reason", "signatures changed", "--force"], extra: other)
        #expect(forced.status == 0)
    }

    @Test func quarantineShowRescanDeleteExportAndTokens() async throws {
        let fixture = try AdminFixture()
        let server = try await fixture.startServer()
        let eicarId = try #require(try await fixture.handOff(Fixtures.eicar, filename: "eicar.com", server: server)["id"] as? String)
        let cleanId = try #require(try await fixture.handOff(Data("fine\n".utf8), filename: "fine.txt", server: server)["id"] as? String)
        let secondEicar = try #require(try await fixture.handOff(Fixtures.eicar, filename: "again.com", server: server)["id"] as? String)
        _ = await server.stopped()

        let shown = try await fixture.airlock(["quarantine", "show", eicarId])
        #expect(shown.status == 0)
        #expect(shown.standardOutput.contains("Audit history:"))
        #expect(shown.standardOutput.contains("transfer.created"))

        let rescan = try await fixture.airlock(["quarantine", "rescan", "--all"])
        #expect(rescan.status == 0)
        // Not a terminal: plain lines, one per transfer, no progress bar.
        #expect(rescan.standardError.contains("\(eicarId): Airlock.Test.EICAR"))
        #expect(!rescan.standardError.contains("\u{1B}[K"))
        let state = try await fixture.json(["transfers", "show", eicarId]) as? [String: Any]
        #expect((state?["transfer"] as? [String: Any])?["state"] as? String == "quarantined")
        #expect(try await fixture.airlock(["quarantine", "rescan"]).status == 2)

        let exported = fixture.directory.file("exported.bin")
        #expect(try await fixture.airlock(["quarantine", "export", eicarId, "--to", exported]).status == 2)
        #expect(try await fixture.airlock(["quarantine", "export", eicarId, "--to", exported, "--force"]).status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: exported)) == Fixtures.eicar)

        #expect(try await fixture.airlock(["quarantine", "delete", secondEicar]).status == 2)
        #expect(try await fixture.airlock(["quarantine", "delete", secondEicar, "--reason", "malware"]).status == 0)
        #expect(!FileManager.default.fileExists(atPath: fixture.quarantineDirectory + "/" + secondEicar))
        let deleted = try await fixture.json(["transfers", "list", "--state", "deleted"]) as? [[String: Any]]
        #expect(deleted?.compactMap { $0["id"] as? String } == [secondEicar])
        // A clean transfer is not in the quarantine.
        let wrongState = try await fixture.airlock(["quarantine", "delete", cleanId, "--reason", "x"])
        #expect(wrongState.status == 2)
        #expect(wrongState.standardError.contains("is stored"))

        let token = try await fixture.json(["token", "issue", cleanId, "--recipient", "bob@example.org", "--ttl", "60"]) as? [String: Any]
        #expect((token?["url"] as? String)?.contains("/v1/files/") == true)
        #expect(try await fixture.airlock(["token", "issue", eicarId, "--recipient", "bob@example.org"]).status == 2)
        let listed = try await fixture.airlock(["transfers", "list", "--sender", "alice@example.org", "--verdict", "clean"])
        #expect(listed.standardOutput.contains(cleanId))
        #expect(!listed.standardOutput.contains(eicarId))
        #expect(listed.standardOutput.contains("5 B"))
    }

    @Test func errorsExitTwoWithWhatToDo() async throws {
        let empty = try AdminFixture()
        let noLedger = try await empty.airlock(["transfers", "list"])
        #expect(noLedger.status == 2)
        #expect(noLedger.standardError.contains("no ledger at"))
        #expect(!FileManager.default.fileExists(atPath: empty.databasePath))

        let fixture = try AdminFixture()
        _ = await (try await fixture.startServer()).stopped()
        for arguments in [["quarantine", "show", "nope"], ["transfers", "show", "nope"], ["quarantine", "release", "nope", "--reason", "r"]] {
            let result = try await fixture.airlock(arguments)
            #expect(result.status == 2, "\(arguments)")
            #expect(result.standardError.contains("no transfer nope"), "\(arguments)")
            #expect(result.standardError.contains("airlock transfers list"), "\(arguments)")
        }
        let badDate = try await fixture.airlock(["transfers", "list", "--since", "yesterday"])
        #expect(badDate.status == 2)
        #expect(badDate.standardError.contains("--since"))
    }

    @Test func auditVerifyNamesEachKindOfTampering() async throws {
        let fixture = try AdminFixture()
        let server = try await fixture.startServer()
        for index in 0..<4 {
            _ = try await fixture.handOff(Data("entry \(index)\n".utf8), filename: "f\(index).txt", server: server)
        }
        _ = await server.stopped()
        #expect(try await fixture.airlock(["audit", "verify"]).status == 0)

        /// Applies `tamper` to a copy of the ledger and returns `audit verify`'s result on it.
        func verify(after tamper: String) async throws -> ProcessRunner.Result {
            let copy = try TemporaryDirectory()
            try FileManager.default.copyItem(atPath: fixture.databasePath, toPath: copy.file("airlock.sqlite"))
            let queue = try DatabaseQueue(path: copy.file("airlock.sqlite"))
            try await queue.write { db in
                try db.execute(sql: "DROP TRIGGER auditLogNoUpdate; DROP TRIGGER auditLogNoDelete;")
                try db.execute(sql: tamper)
            }
            try queue.close()
            return try await fixture.airlock(["audit", "verify"], extra: ["AIRLOCK_STORAGE_DATA_DIRECTORY": copy.path])
        }

        let altered = try await verify(after: "UPDATE audit_log SET actor = 'server:someone-else' WHERE id = 2")
        #expect(altered.status == 1)
        #expect(altered.standardOutput.contains("entry 2: its content was altered"))

        let deleted = try await verify(after: "DELETE FROM audit_log WHERE id = 2")
        #expect(deleted.status == 1)
        #expect(deleted.standardOutput.contains("entry 2: entries 2 are missing"))

        // Swap entries 2 and 3.
        let reordered = try await verify(after: "UPDATE audit_log SET id = -id WHERE id IN (2, 3); UPDATE audit_log SET id = 5 + id WHERE id < 0")
        #expect(reordered.status == 1)
        #expect(reordered.standardOutput.contains("entry 2: does not follow the entry before it"))
        #expect(!reordered.standardOutput.contains("missing"))

        let truncated = try await verify(after: "DELETE FROM audit_log WHERE id = 4")
        #expect(truncated.status == 1)
        #expect(truncated.standardOutput.contains("has no creation entry"))

        // The triggers themselves refuse edits through SQL.
        let queue = try DatabaseQueue(path: fixture.databasePath)
        await #expect(throws: DatabaseError.self) {
            try await queue.write { db in try db.execute(sql: "UPDATE audit_log SET actor = 'x' WHERE id = 1") }
        }
        try queue.close()
    }

    @Test func doctorFindsEachKindOfDamage() async throws {
        let fixture = try AdminFixture()
        let server = try await fixture.startServer()
        var sha: [String] = []
        for index in 0..<3 {
            sha.append(
                try #require(
                    try await fixture.handOff(Data("doctor \(index)\n".utf8), filename: "d\(index).txt", server: server)["sha256"] as? String
                )
            )
        }
        let eicarId = try #require(try await fixture.handOff(Fixtures.eicar, filename: "e.com", server: server)["id"] as? String)
        _ = await server.stopped()
        #expect(try await fixture.airlock(["doctor"]).status == 0)

        func path(_ sha256: String) -> String {
            "\(fixture.dataDirectory)/files/\(sha256.prefix(2))/\(sha256.dropFirst(2).prefix(2))/\(sha256)"
        }
        try FileManager.default.removeItem(atPath: path(sha[0]))
        try Data("not what was stored".utf8).write(to: URL(fileURLWithPath: path(sha[1])))
        let orphan = "\(fixture.dataDirectory)/files/ff/ee/" + String(repeating: "f", count: 64)
        try FileManager.default.createDirectory(atPath: (orphan as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data("orphan".utf8).write(to: URL(fileURLWithPath: orphan))
        let stale = "\(fixture.dataDirectory)/staging/left-over"
        try Data("half an upload".utf8).write(to: URL(fileURLWithPath: stale))
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -3600)], ofItemAtPath: stale)
        let fresh = "\(fixture.dataDirectory)/staging/in-flight"
        try Data("an upload in progress".utf8).write(to: URL(fileURLWithPath: fresh))
        try FileManager.default.removeItem(atPath: "\(fixture.quarantineDirectory)/\(eicarId)")

        let result = try await fixture.airlock(["doctor"])
        #expect(result.status == 1)
        let problems = try await fixture.json(["doctor"]) as? [[String: Any]] ?? []
        let found = Set(problems.compactMap { problem in (problem["kind"] as? String).map { "\($0) \(problem["path"] as? String ?? "")" } })
        #expect(
            found == [
                "missing-bytes \(path(sha[0]))", "wrong-hash \(path(sha[1]))", "orphan-file \(orphan)", "stale-staging \(stale)",
                "missing-bytes \(fixture.quarantineDirectory)/\(eicarId)",
            ]
        )
        #expect(result.standardOutput.contains("PROBLEM"))
    }

    @Test func purgeAppliesRetentionWithAnInjectedClock() async throws {
        let fixture = try AdminFixture()
        let server = try await fixture.startServer()
        let content = Data("old news\n".utf8)
        let clean = try await fixture.handOff(content, filename: "old.txt", server: server)
        let cleanId = try #require(clean["id"] as? String)
        let sha256 = try #require(clean["sha256"] as? String)
        let eicarId = try #require(try await fixture.handOff(Fixtures.eicar, filename: "e.com", server: server)["id"] as? String)
        _ = await server.stopped()
        let cleanFile = "\(fixture.dataDirectory)/files/\(sha256.prefix(2))/\(sha256.dropFirst(2).prefix(2))/\(sha256)"
        let quarantined = "\(fixture.quarantineDirectory)/\(eicarId)"

        let in31Days = ISO8601DateFormatter().string(from: Date(timeIntervalSinceNow: 31 * 86400))
        let in91Days = ISO8601DateFormatter().string(from: Date(timeIntervalSinceNow: 91 * 86400))
        #expect((try await fixture.json(["purge", "--now", ISO8601DateFormatter().string(from: Date())]) as? [Any])?.isEmpty == true)

        let dryRun = try await fixture.json(["purge", "--dry-run", "--now", in31Days]) as? [[String: Any]]
        #expect(dryRun?.compactMap { $0["id"] as? String } == [cleanId])
        #expect(FileManager.default.fileExists(atPath: cleanFile))

        // Today's upload counters stay, whatever `--now` says: they are what today's daily quotas count (the ledger's
        // contract tests prune counters of earlier days).
        let counters = try await fixture.airlock(["purge", "--dry-run", "--now", in31Days])
        #expect(counters.status == 0)
        #expect(!counters.standardOutput.contains("quota counter"), "\(counters.standardOutput)")
        let purged = try await fixture.json(["purge", "--now", in31Days]) as? [[String: Any]]
        #expect(purged?.compactMap { $0["id"] as? String } == [cleanId])
        #expect(!FileManager.default.fileExists(atPath: cleanFile))
        #expect(FileManager.default.fileExists(atPath: quarantined))
        let row = try await fixture.json(["transfers", "show", cleanId]) as? [String: Any]
        #expect((row?["transfer"] as? [String: Any])?["state"] as? String == "purged")

        let later = try await fixture.airlock(["purge", "--now", in91Days])
        #expect(later.status == 0)
        #expect(later.standardOutput.contains("purged 1 transfer"))
        #expect(!later.standardOutput.contains("quota counter"))
        let quota = try await fixture.json(["quotas"]) as? [String: Any]
        let today = (quota?["usage"] as? [[String: Any]])?.compactMap { $0["todayFiles"] as? Int }.max()
        #expect(today == 2, "\(String(describing: quota))")
        #expect(!FileManager.default.fileExists(atPath: quarantined))
        #expect(try await fixture.airlock(["doctor"]).status == 0)
        #expect(try await fixture.airlock(["audit", "verify"]).status == 0)
    }
}

@Suite("admin commands and a locked ledger")
struct LockedLedgerTests {
    @Test func aLockedLedgerIsAnOperationalErrorThatSaysWhatToDo() async throws {
        let fixture = try AdminFixture()
        let server = try await fixture.startServer()
        let id = try #require(try await fixture.handOff(Fixtures.eicar, filename: "e.com", server: server)["id"] as? String)
        _ = await server.stopped()
        // Another process holds the write lock for longer than the command's 10 s busy timeout.
        let queue = try DatabaseQueue(path: fixture.databasePath)
        let result = try await queue.writeWithoutTransaction { db in
            try db.execute(sql: "BEGIN EXCLUSIVE")
            defer { try? db.execute(sql: "ROLLBACK") }
            return try ProcessRunner.runBlocking(
                AirlockCommand.executable,
                ["quarantine", "delete", id, "--reason", "r"],
                in: Fixtures.packageRoot.path,
                environment: fixture.environment
            )
        }
        #expect(result.status == 2)
        #expect(result.standardError.contains("the ledger is locked by another process"))
        #expect(FileManager.default.fileExists(atPath: fixture.quarantineDirectory + "/" + id))
        try queue.close()
    }
}
