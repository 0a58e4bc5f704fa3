import AirlockTestSupport
import Foundation
import Testing

/// `airlock quarantine rekey`: quarantine key rotation end to end.
@Suite("quarantine rekey")
struct RekeyCommandTests {
    static func configuration(_ fixture: AdminFixture, _ name: String, keys: [String: Data], active: String) throws -> String {
        let shipped = try Data(contentsOf: Fixtures.packageRoot.appendingPathComponent("Config/airlock.json"))
        var root = try #require(try JSONSerialization.jsonObject(with: shipped) as? [String: Any])
        var storage = root["storage"] as? [String: Any] ?? [:]
        storage["quarantineKey"] = nil
        storage["quarantineKeys"] = keys.mapValues { $0.base64EncodedString() }
        storage["activeQuarantineKeyId"] = active
        root["storage"] = storage
        return try fixture.directory.write("\(name).json", try JSONSerialization.data(withJSONObject: root))
    }

    /// The key id an `ALQ2` quarantine file names.
    static func keyId(ofQuarantined id: String, _ fixture: AdminFixture) throws -> String? {
        let raw = try Data(contentsOf: URL(fileURLWithPath: fixture.quarantineDirectory + "/" + id))
        guard raw.prefix(4) == Data("ALQ2".utf8), raw.count > 5 else { return nil }
        return String(decoding: raw[5..<(5 + Int(raw[4]))], as: UTF8.self)
    }

    @Test func rekeyMovesEveryFileToTheActiveKeyAndARerunDoesNothing() async throws {
        let fixture = try AdminFixture()
        let server = try await fixture.startServer()
        var ids: [String] = []
        for index in 0..<3 {
            ids.append(try #require(try await fixture.handOff(Fixtures.eicar, filename: "e\(index).com", server: server)["id"] as? String))
        }
        _ = await server.stopped()
        // The shipped configuration has the single storage.quarantineKey: key id "default".
        for id in ids { #expect(try Self.keyId(ofQuarantined: id, fixture) == "default") }

        let developmentKey = try #require(Data(base64Encoded: "A/5gPtAAkrFgfwOJCzdap7K8hIDTce+ioiPctUX2UDA="))
        let newKey = Fixtures.randomBytes(count: 32, seed: 2026)
        let rotating = try Self.configuration(fixture, "rotating", keys: ["default": developmentKey, "2026": newKey], active: "2026")
        let rotated = try Self.configuration(fixture, "rotated", keys: ["2026": newKey], active: "2026")
        let lost = try Self.configuration(fixture, "lost", keys: ["2027": Fixtures.randomBytes(count: 32, seed: 2027)], active: "2027")

        // Before the rekey, the new key alone opens nothing.
        let tooEarly = try await fixture.airlock([
            "quarantine", "export", ids[0], "--to", fixture.directory.file("early"), "--force", "--config", rotated,
        ])
        #expect(tooEarly.status == 2)
        #expect(tooEarly.standardError.contains("quarantine key \"default\", which is not configured"))
        #expect(!FileManager.default.fileExists(atPath: fixture.directory.file("early")))

        let run = try await fixture.airlock(["quarantine", "rekey", "--config", rotating, "--json"])
        #expect(run.status == 0, "\(run.standardError)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(run.standardOutput.utf8)) as? [String: Any])
        #expect(report["activeKeyId"] as? String == "2026")
        let rekeyed = report["rekeyed"] as? [[String: String]] ?? []
        #expect(Set(rekeyed.compactMap { $0["id"] }) == Set(ids))
        #expect(rekeyed.allSatisfy { $0["fromKeyId"] == "default" })
        #expect(run.standardError.contains("\(ids[0]): default -> 2026"))
        for id in ids { #expect(try Self.keyId(ofQuarantined: id, fixture) == "2026") }
        let entries = try await fixture.auditEntries(action: "quarantine.rekeyed")
        #expect(Set(entries.compactMap { $0.entry["transferId"] as? String }) == Set(ids))
        // Every entry also names the node (node.id, the host name here) that wrote it.
        #expect(entries.allSatisfy { $0.details.filter { $0.key != "node" } == ["fromKeyId": "default", "toKeyId": "2026"] })
        #expect(entries.allSatisfy { $0.details["node"] == ProcessInfo.processInfo.hostName })
        #expect(entries.allSatisfy { $0.entry["actor"] as? String == "admin:\(AdminFixture.operatingSystemUser)" })
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.quarantineDirectory).filter { $0.hasPrefix(".tmp") }.isEmpty)

        // The retired key is gone from the configuration: export and release still work.
        let exported = fixture.directory.file("after-rekey.bin")
        #expect(try await fixture.airlock(["quarantine", "export", ids[0], "--to", exported, "--force", "--config", rotated]).status == 0)
        #expect(try Data(contentsOf: URL(fileURLWithPath: exported)) == Fixtures.eicar)
        let released = try await fixture.airlock(["quarantine", "release", ids[1], "--reason", "sample for the lab", "--force", "--config", rotated])
        #expect(released.status == 0, "\(released.standardError)")
        let shown = try await fixture.json(["transfers", "show", ids[1]]) as? [String: Any]
        let sha256 = try #require((shown?["transfer"] as? [String: Any])?["sha256"] as? String)
        let clean = "\(fixture.dataDirectory)/files/\(sha256.prefix(2))/\(sha256.dropFirst(2).prefix(2))/\(sha256)"
        #expect(try Data(contentsOf: URL(fileURLWithPath: clean)) == Fixtures.eicar)

        // A rerun has nothing to do and records nothing.
        let rerun = try await fixture.airlock(["quarantine", "rekey", "--config", rotated])
        #expect(rerun.status == 0)
        #expect(rerun.standardOutput.contains("re-encrypted 0 of 2 quarantined files under key 2026; 2 already were"))
        #expect(try await fixture.auditEntries(action: "quarantine.rekeyed").count == 3)

        // With a key that opens none of them: each is reported, left as it is, and the run exits 1.
        let before = try ids.filter { $0 != ids[1] }.map { try Data(contentsOf: URL(fileURLWithPath: fixture.quarantineDirectory + "/" + $0)) }
        let wrong = try await fixture.airlock(["quarantine", "rekey", "--config", lost])
        #expect(wrong.status == 1)
        #expect(wrong.standardOutput.contains("PROBLEMS: 2 files left as they are"))
        #expect(wrong.standardOutput.contains("quarantine key \"2026\", which is not configured"))
        let after = try ids.filter { $0 != ids[1] }.map { try Data(contentsOf: URL(fileURLWithPath: fixture.quarantineDirectory + "/" + $0)) }
        #expect(before == after)
        #expect(try await fixture.airlock(["doctor", "--config", rotated]).status == 0)
        #expect(try await fixture.airlock(["audit", "verify"]).status == 0)
    }

    /// SHA-256 of `text` in hexadecimal, by `sha256sum`: an oracle independent of the broker's own code.

    /// Runs `airlock ARGUMENTS`, sends it SIGTERM as soon as its standard error shows `cue`, and waits for it.
    static func runTerminated(_ arguments: [String], fixture: AdminFixture, cue: String) async throws -> (status: Int32, standardError: String) {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(
                    with: Result {
                        let process = Process()
                        process.executableURL = URL(fileURLWithPath: AirlockCommand.executable)
                        process.arguments = arguments
                        process.currentDirectoryURL = Fixtures.packageRoot
                        process.environment = ProcessInfo.processInfo.environment.merging(fixture.environment) { $1 }
                        let output = Pipe()
                        let errors = Pipe()
                        process.standardOutput = output
                        process.standardError = errors
                        process.standardInput = FileHandle.nullDevice
                        try process.run()
                        var seen = Data()
                        while !String(decoding: seen, as: UTF8.self).contains(cue) {
                            let chunk = errors.fileHandleForReading.availableData
                            if chunk.isEmpty { break }
                            seen.append(chunk)
                        }
                        kill(process.processIdentifier, SIGTERM)
                        seen.append(errors.fileHandleForReading.readDataToEndOfFile())
                        _ = output.fileHandleForReading.readDataToEndOfFile()
                        process.waitUntilExit()
                        return (process.terminationStatus, String(decoding: seen, as: UTF8.self))
                    }
                )
            }
        }
    }

    @Test func sigtermStopsBetweenFilesAndARerunContinues() async throws {
        let fixture = try AdminFixture()
        // Every file over 1 KiB is unscannable, so large random files go straight to the quarantine, and each
        // takes long enough to re-encrypt that the signal lands while files remain.
        let server = try await fixture.startServer(extra: ["AIRLOCK_SCANNER_MAX_FILE_SIZE": "1024", "AIRLOCK_SCANNER_MAX_SCAN_SIZE": "4096"])
        var ids: [String] = []
        for index in 0..<4 {
            let content = Fixtures.randomBytes(count: 24 << 20, seed: UInt64(index))
            let transfer = try await fixture.handOff(content, filename: "big\(index).bin", server: server)
            #expect(transfer["state"] as? String == "quarantined")
            ids.append(try #require(transfer["id"] as? String))
        }
        _ = await server.stopped()
        let developmentKey = try #require(Data(base64Encoded: "A/5gPtAAkrFgfwOJCzdap7K8hIDTce+ioiPctUX2UDA="))
        let rotating = try Self.configuration(
            fixture,
            "rotating",
            keys: ["default": developmentKey, "next": Fixtures.randomBytes(count: 32, seed: 99)],
            active: "next"
        )

        let stopped = try await Self.runTerminated(["quarantine", "rekey", "--config", rotating], fixture: fixture, cue: "default -> next")
        #expect(stopped.status == 130, "\(stopped.standardError)")
        #expect(stopped.standardError.contains("run `airlock quarantine rekey` again to continue"))
        let moved = try ids.filter { try Self.keyId(ofQuarantined: $0, fixture) == "next" }
        #expect(!moved.isEmpty && moved.count < ids.count, "\(moved.count) of \(ids.count) moved before the signal took effect")
        // Every file is whole under one key or the other, and no temporary file is left.
        for id in ids { #expect(["default", "next"].contains(try Self.keyId(ofQuarantined: id, fixture))) }
        #expect(try FileManager.default.contentsOfDirectory(atPath: fixture.quarantineDirectory).filter { $0.hasPrefix(".tmp") }.isEmpty)
        #expect(try await fixture.auditEntries(action: "quarantine.rekeyed").count == moved.count)

        let rerun = try await fixture.json(["quarantine", "rekey", "--config", rotating]) as? [String: Any]
        #expect((rerun?["rekeyed"] as? [Any])?.count == ids.count - moved.count)
        #expect(rerun?["alreadyActive"] as? Int == moved.count)
        for id in ids { #expect(try Self.keyId(ofQuarantined: id, fixture) == "next") }
        #expect(try await fixture.airlock(["doctor", "--config", rotating]).status == 0)
    }
}
