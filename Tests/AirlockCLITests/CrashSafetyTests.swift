import AirlockTestSupport
import Crypto
import Foundation
import GRDB
import Synchronization
import Testing

/// DESIGN §8 crash safety, the short version of scripts/crash-safety.sh: concurrent hand-offs to the real
/// `airlock serve`, SIGKILL mid-flight, restart, then `airlock doctor`, downloads and a ledger/disk comparison.
@Suite("crash safety of airlock serve")
struct CrashSafetyTests {
    struct Sent: Sendable {
        var index: Int
        var sha256: String
        var isEICAR: Bool
        var status: String
        var body: Data
    }

    static func sha256(_ data: Data) -> String {
        SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }

    /// Hands off the file at `path` with curl; returns the HTTP status ("000" when the connection dropped) and body.
    static func handOff(_ path: String, index: Int, port: Int, output: String) async throws -> (String, Data) {
        let result = try await ProcessRunner.run(
            "/usr/bin/curl",
            [
                "-s", "--max-time", "60", "-o", output, "-w", "%{http_code}", "-H", "Authorization: Bearer dev-api-key-change-me",
                "-H", "Content-Type: application/octet-stream", "--data-binary", "@\(path)",
                "http://127.0.0.1:\(port)/v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename=crash-\(index).bin",
            ]
        )
        return (result.standardOutput, (try? Data(contentsOf: URL(fileURLWithPath: output))) ?? Data())
    }

    @Test func acknowledgedTransfersSurviveSIGKILLMidFlight() async throws {
        let fixture = try AdminFixture()
        let count = 20
        let killAfter = 5
        // Distinct contents, large enough to be in flight when the kill comes; every fifth is EICAR.
        let files = try await Blocking.run {
            try (0..<count).map { index in
                let isEICAR = index % 5 == 2
                let content =
                    isEICAR
                    ? Fixtures.eicar + Data("\n\(index)".utf8) : Fixtures.randomBytes(count: 100_000 + index * 40_000, seed: UInt64(1000 + index))
                return (path: try fixture.directory.write("content-\(index)", content), sha256: Self.sha256(content), isEICAR: isEICAR)
            }
        }

        let server = try await fixture.startServer()
        let acknowledged = Acknowledgements()
        let sent = try await withThrowingTaskGroup(of: Sent.self) { group in
            for (index, file) in files.enumerated() {
                group.addTask {
                    let (status, body) = try await Self.handOff(
                        file.path,
                        index: index,
                        port: server.port,
                        output: fixture.directory.file("response-\(index)")
                    )
                    if status == "201" {
                        if acknowledged.increment() == killAfter { kill(server.pid, SIGKILL) }
                    }
                    return Sent(index: index, sha256: file.sha256, isEICAR: file.isEICAR, status: status, body: body)
                }
            }
            return try await group.reduce(into: [Sent]()) { $0.append($1) }
        }
        if acknowledged.count < killAfter {
            kill(server.pid, SIGKILL)
        }
        // Signal 0 only waits: the SIGKILL was sent above.
        #expect(await server.stopped(signal: 0, timeout: 30) != nil)

        let acked = sent.filter { $0.status == "201" }
        #expect(acked.count >= killAfter)
        // Every hand-off either was acknowledged or lost its connection to the kill: no other answer.
        #expect(sent.allSatisfy { $0.status == "201" || $0.status == "000" }, "\(sent.map(\.status))")

        // If a check below stops the test early, releasing the ServerProcess kills the server.
        let restarted = try await fixture.startServer()
        let doctor = try await fixture.airlock(["doctor"])
        #expect(doctor.status == 0, "\(doctor.standardOutput)\(doctor.standardError)")

        var acknowledgedIds: Set<String> = []
        for item in acked {
            let transfer = try #require(try JSONSerialization.jsonObject(with: item.body) as? [String: Any])
            let id = try #require(transfer["id"] as? String)
            acknowledgedIds.insert(id)
            #expect(transfer["sha256"] as? String == item.sha256)
            let (status, body) = try await fixture.fetch(
                "/v1/transfers/\(id)/tokens",
                method: "POST",
                body: #"{"recipient":"bob@example.org"}"#,
                server: restarted
            )
            if item.isEICAR {
                #expect(transfer["verdict"] as? String == "infected")
                #expect(status == "409", "\(String(decoding: body, as: UTF8.self))")
                #expect(FileManager.default.fileExists(atPath: fixture.quarantineDirectory + "/" + id))
            } else {
                #expect(transfer["verdict"] as? String == "clean")
                #expect(status == "201")
                let url = try #require((try JSONSerialization.jsonObject(with: body) as? [String: Any])?["url"] as? String)
                let (downloadStatus, content) = try await fixture.fetch(url, server: restarted)
                #expect(downloadStatus == "200")
                #expect(Self.sha256(content) == item.sha256)
            }
        }

        // Nothing half-written: ledger and disk agree both ways, staging is empty.
        let rows = try await DatabaseQueue(path: fixture.databasePath).read { db in
            try Row.fetchAll(db, sql: #"SELECT id, sha256, state FROM "transfer""#).map {
                ($0["id"] as String, $0["sha256"] as String, $0["state"] as String)
            }
        }
        #expect(acknowledgedIds.isSubset(of: Set(rows.map(\.0))))
        let storedHashes = Set(rows.filter { ["stored", "released"].contains($0.2) }.map(\.1))
        let cleanFiles = (FileManager.default.enumerator(atPath: fixture.dataDirectory + "/files")?.allObjects as? [String] ?? [])
            .map { ($0 as NSString).lastPathComponent }.filter { $0.count == 64 }
        #expect(Set(cleanFiles) == storedHashes)
        let quarantined = Set(rows.filter { $0.2 == "quarantined" }.map(\.0))
        let quarantineFiles = Set((try? FileManager.default.contentsOfDirectory(atPath: fixture.quarantineDirectory)) ?? [])
        #expect(quarantineFiles == quarantined)
        #expect(TemporaryDirectory.regularFiles(under: fixture.dataDirectory + "/staging").isEmpty)
        #expect(await restarted.stopped() == 0)
    }
}

/// Counts 201 answers across the concurrent hand-offs.
final class Acknowledgements: Sendable {
    private let value = Mutex(0)

    /// Adds one; returns the new count.
    func increment() -> Int {
        self.value.withLock {
            $0 += 1
            return $0
        }
    }

    var count: Int { self.value.withLock { $0 } }
}
