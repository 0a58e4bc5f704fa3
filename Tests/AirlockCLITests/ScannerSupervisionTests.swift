import AirlockTestSupport
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 17: `airlock serve` survives its scanner process dying or hanging, and a file that kills the scanner
/// twice is unscannable, for good.
@Suite("scanner supervision")
struct ScannerSupervisionTests {
    /// The scanner serving `server` now, other than `previous` (a restarted one), within 30 s.
    static func scanner(of server: ServerProcess, other previous: Set<Int32> = []) async throws -> Int32 {
        let pid = await ProcessTable.waitFor(timeout: 30) {
            ProcessTable.scannerProcesses(of: server.pid).first { !previous.contains($0) }
        }
        return try #require(pid, "no (new) scanner process under airlock serve (pid \(server.pid))")
    }

    static func metric(_ name: String, fixture: AdminFixture, server: ServerProcess) async throws -> Double {
        let (_, body) = try await fixture.fetch("/metrics", server: server)
        let text = String(decoding: body, as: UTF8.self)
        return text.split(separator: "\n").filter { $0.hasPrefix(name) }.compactMap { $0.split(separator: " ").last.flatMap { Double($0) } }.reduce(
            0,
            +
        )
    }

    @Test func aScannerKilledWithSIGSEGVDuringUploadsIsReplacedAndEveryUploadIsAnswered() async throws {
        let fixture = try AdminFixture()
        let server = try await fixture.startServer()
        defer { _ = server.stop() }
        let first = try await Self.scanner(of: server)

        // Six clients, ten uploads each, small (in memory) and large (streamed to the scanner while received).
        let answered = Acknowledgements()
        let results = try await withThrowingTaskGroup(of: [(String, String)].self) { group in
            for client in 0..<6 {
                group.addTask {
                    var results: [(String, String)] = []
                    for index in 0..<10 {
                        let size = index % 3 == 0 ? 400_000 : 20_000
                        let transfer = try await fixture.handOff(
                            Fixtures.randomBytes(count: size, seed: UInt64(client * 100 + index)),
                            filename: "stream-\(client)-\(index).bin",
                            server: server
                        )
                        results.append((transfer["verdict"] as? String ?? "no answer: \(transfer)", transfer["reason"] as? String ?? ""))
                        if answered.increment() == 10 {
                            kill(first, SIGSEGV)
                        }
                    }
                    return results
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
        // Every upload was answered, and clean: the scans the crash interrupted were retried on the new scanner.
        #expect(results.count == 60)
        #expect(results.allSatisfy { $0.0 == "clean" }, "\(results.filter { $0.0 != "clean" })")
        #expect(kill(server.pid, 0) == 0, "the broker (pid \(server.pid)) is still running")

        let second = try await Self.scanner(of: server, other: [first])
        let after = try await fixture.handOff(Data("after the crash\n".utf8), filename: "after.txt", server: server)
        #expect(after["verdict"] as? String == "clean")
        #expect(ProcessTable.scannerProcesses(of: server.pid) == [second])

        #expect(try await Self.metric("airlock_scanner_crashes_total{cause=\"signal 11\"}", fixture: fixture, server: server) == 1)
        let audited = try await fixture.auditEntries(action: "scanner.crashed")
        #expect(audited.count == 1)
        #expect(audited.first?.details["pid"] == "\(first)")
        #expect(audited.first?.details["cause"]?.hasPrefix("signal 11") == true)
    }

    @Test func aStoppedScannerIsKilledAfterTheTimeLimitAndTheUploadRetried() async throws {
        let fixture = try AdminFixture()
        let limit = 2
        let server = try await fixture.startServer(extra: ["AIRLOCK_SCANNER_SCAN_TIMEOUT_SECONDS": "\(limit)"])
        defer { _ = server.stop() }
        let stopped = try await Self.scanner(of: server)
        kill(stopped, SIGSTOP)

        // The broker stays ready while its scanner hangs.
        let (ready, _) = try await fixture.fetch("/readyz", server: server)
        #expect(ready == "200")
        // Answered within twice the time limit plus a few seconds (curl gives up after that): the hung scan is
        // killed at the limit and retried once on a new scanner.
        let file = try fixture.directory.write("while-stopped.txt", Data("uploaded while the scanner was stopped\n".utf8))
        let result = try await ProcessRunner.run(
            "/usr/bin/curl",
            [
                "-s", "--max-time", "\(2 * limit + 5)", "-H", "Authorization: Bearer dev-api-key-change-me", "--data-binary", "@\(file)",
                "http://127.0.0.1:\(server.port)/v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename=while-stopped.txt",
            ]
        )
        #expect(result.status == 0, "curl: \(result.status) \(result.standardError)")
        let transfer = try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any]
        #expect(transfer?["verdict"] as? String == "clean")

        let replacement = try await Self.scanner(of: server, other: [stopped])
        // The stopped scanner was killed and reaped: only its replacement is left.
        #expect(ProcessTable.scannerProcesses(of: server.pid) == [replacement])
        #expect(kill(server.pid, 0) == 0)
        #expect(try await Self.metric("airlock_scanner_crashes_total{cause=\"timeout\"}", fixture: fixture, server: server) == 1)
        #expect(try await fixture.auditEntries(action: "scanner.timedOut").count == 1)
    }

    @Test func aFileDuringWhoseScanTheScannerDiesTwiceIsUnscannableForGood() async throws {
        let fixture = try AdminFixture()
        let server = try await fixture.startServer()
        defer { _ = server.stop() }
        // Past the 1 MiB that type detection reads first, so the scan is under way while the rest is awaited.
        let content = Fixtures.randomBytes(count: 4 << 20, seed: 1717)
        let half = content.count / 2
        let path = "/v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename=crasher.bin"
        let connection = try RawConnection(port: server.port)
        defer { connection.close() }
        let head =
            "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer dev-api-key-change-me\r\n"
            + "Content-Type: application/octet-stream\r\nContent-Length: \(content.count)\r\n\r\n"
        #expect(connection.send(Data(head.utf8) + content.prefix(half)))

        // The upload is being scanned while received: the scanner holds its staging file. Kill it there, twice.
        var killed: Set<Int32> = []
        for _ in 0..<2 {
            // Bounded generously: under the whole suite a restarted scanner once took longer than 30 s to get here.
            let scanning = await ProcessTable.waitFor(timeout: 90) {
                ProcessTable.scannerProcesses(of: server.pid).first { pid in
                    !killed.contains(pid) && ProcessTable.openFiles(of: pid).contains { $0.contains("/staging/") }
                }
            }
            let pid = try #require(scanning, "no scanner holds the upload's staging file")
            kill(pid, SIGSEGV)
            killed.insert(pid)
        }
        #expect(connection.send(content.suffix(from: half)))
        let response = await connection.receive(until: "}", timeout: 60)
        let body = try #require(response.range(of: "\r\n\r\n").map { String(response[$0.upperBound...]) })
        let transfer = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any]
        #expect(response.hasPrefix("HTTP/1.1 201"), "\(response.prefix(200))")
        #expect(transfer?["verdict"] as? String == "unscannable")
        #expect(transfer?["reason"] as? String == "the scanner crashed while parsing this file")
        #expect(transfer?["state"] as? String == "quarantined")

        // The same bytes again: unscannable at once, from the remembered verdict, without another crash.
        let third = try await Self.scanner(of: server, other: killed)
        let again = try await fixture.handOff(content, filename: "crasher-again.bin", server: server)
        #expect(again["verdict"] as? String == "unscannable")
        #expect(again["reason"] as? String == "the scanner crashed while parsing this file")
        #expect(ProcessTable.scannerProcesses(of: server.pid) == [third])
        #expect(try await Self.metric("airlock_scanner_crashes_total", fixture: fixture, server: server) == 2)
        #expect(try await fixture.auditEntries(action: "scanner.crashed").count == 2)
    }
}
