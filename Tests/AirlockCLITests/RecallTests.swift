import AirlockTestSupport
import Crypto
import Foundation
import Testing

/// Issue 15: a file delivered clean, detected by a signature that arrives later, is recalled while uploads go on.
@Suite("retro-scan and recall", .serialized)
struct RecallTests {
    @Test func aSignatureForDeliveredContentRecallsItUnderLoad() async throws {
        let receiver = try await WebhookReceiver.start(secret: WebhookTests.secret)
        let fixture = try AdminFixture(extra: WebhookTests.environment(port: receiver.port))
        let (server, signatures) = try await ReloadTests.serverWithOwnSignatures(fixture)
        defer { _ = server.stop() }

        // Delivered clean, through the native API and through XEP-0363, and downloaded by bob.
        let marker = Fixtures.randomBytes(count: 32, seed: 31_337)
        var content = Fixtures.randomBytes(count: 40_000, seed: 8)
        content.append(marker)
        let transfer = try await fixture.handOff(content, filename: "later.bin", server: server)
        #expect(transfer["verdict"] as? String == "clean")
        let id = try #require(transfer["id"] as? String)
        let url = try #require(ReloadTests.downloadPath(transfer))
        let (downloaded, body) = try await fixture.fetch(url, server: server)
        #expect(downloaded == "200")
        #expect(body == content)
        let slot = "/upload/recall/later.bin"
        let secret = "dev-xep0363-secret-change-me-0123456789"
        let v = HMAC<SHA256>.authenticationCode(for: Data("recall/later.bin \(content.count)".utf8), using: SymmetricKey(data: Data(secret.utf8)))
            .map { String(format: "%02x", $0) }.joined()
        let put = try await Self.curl(server, "\(slot)?v=\(v)", data: content)
        #expect(put == "201")
        #expect(try await Self.curl(server, slot) == "200")
        // Another file, still clean after the signature arrives.
        let innocent = try await fixture.handOff(Fixtures.randomBytes(count: 30_000, seed: 9), filename: "innocent.bin", server: server)
        let innocentURL = try #require(ReloadTests.downloadPath(innocent))

        let stop = StopFlag()
        async let load = ReloadTests.uploadContinuously(fixture, server, clients: 3, stop: stop)
        let before = try await ReloadTests.readiness(fixture, server) { _ in true }
        try ReloadTests.signature("Airlock.Test.Later", marker: marker)
            .write(to: URL(fileURLWithPath: (signatures as NSString).appendingPathComponent("later.ndb")))
        _ = try await ReloadTests.readiness(fixture, server) { $0["signatureVersion"] as? String != before["signatureVersion"] as? String }
        // Recalled: the working URL is refused as any quarantined transfer's is, at once.
        var status = ""
        for _ in 0..<600 {
            status = try await fixture.fetch(url, server: server).0
            if status != "200" { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        stop.set()
        let verdicts = try await load
        // (A request that raced the recall may have found the clean copy already gone: 404, no bytes either.)
        #expect(status != "200")
        #expect(try await fixture.fetch(url, server: server).0 == "451", "the recalled transfer's URL is refused as quarantined")
        #expect(try await Self.curl(server, slot) == "403", "the XEP-0363 GET URL is refused as quarantined")
        #expect(try await fixture.fetch(innocentURL, server: server).0 == "200")
        #expect(verdicts.allSatisfy { $0 == "clean" }, "\(Set(verdicts))")

        // The ledger, the CLI and the audit log say so, and name who already had it.
        let shown = try await fixture.json(["transfers", "show", id]) as? [String: Any]
        let document = shown?["transfer"] as? [String: Any]
        #expect(document?["state"] as? String == "quarantined")
        #expect((document?["signature"] as? String)?.hasPrefix("Airlock.Test.Later") == true)
        #expect(document?["recalledAt"] != nil)
        let entries = try await fixture.auditEntries(action: "transfer.recalled")
        #expect(entries.count == 2)
        let native = entries.first { $0.entry["transferId"] as? String == id }
        #expect(native?.details["downloadedBy"] == "bob@example.org")
        #expect(entries.contains { $0.details["downloadedBy"] == "(XEP-0363 download)" })
        let list = try await fixture.airlock(["quarantine", "list"])
        #expect(list.standardOutput.contains("DOWNLOADED BY") && list.standardOutput.contains("bob@example.org"), "\(list.standardOutput)")
        let retroscan = try await fixture.airlock(["retroscan", "status"])
        #expect(retroscan.status == 0, "\(retroscan.standardError)")
        #expect(retroscan.standardOutput.contains("recalled in window  2 transfers"), "\(retroscan.standardOutput)")
        // The bytes are in the quarantine now, and can be examined there.
        let exported = fixture.directory.file("exported.bin")
        let export = try await fixture.airlock(["quarantine", "export", id, "--to", exported, "--force"])
        #expect(export.status == 0, "\(export.standardOutput)\(export.standardError)")
        #expect(FileManager.default.contents(atPath: exported) == content)
        #expect(try await fixture.airlock(["audit", "verify"]).status == 0)
        let doctor = try await fixture.airlock(["doctor"])
        #expect(doctor.status == 0, "\(doctor.standardOutput)\(doctor.standardError)")
        // A webhook receiver on loopback heard of it, signed, with who had downloaded it; and of the reload.
        let requests = try await receiver.requests(until: "two transfer.recalled and a signatures.reloaded") { requests in
            requests.filter { $0.event == "transfer.recalled" }.count >= 2 && requests.contains { $0.event == "signatures.reloaded" }
        }
        await receiver.stop()
        let recall = try #require(requests.first { $0.event == "transfer.recalled" && $0.transfer["id"] as? String == id })
        #expect(recall.signatureIsValid, "X-Airlock-Signature \(recall.signature ?? "missing") does not sign the body")
        #expect(recall.transfer["state"] as? String == "quarantined")
        #expect(recall.transfer["sha256"] as? String == WebhookTests.sha256(content))
        #expect((recall.transfer["signature"] as? String)?.hasPrefix("Airlock.Test.Later") == true)
        #expect("\(recall.json)".contains("bob@example.org"), "the body names who downloaded it: \(recall.json)")
        #expect(requests.filter { $0.event == "transfer.recalled" }.allSatisfy { $0.signatureIsValid })
        let reloaded = try #require(requests.first { $0.event == "signatures.reloaded" })
        #expect(reloaded.signatureIsValid)
        #expect("\(reloaded.json)".contains(before["signatureVersion"] as? String ?? "?"), "names the previous version")

        // Uploaded again, the same bytes are infected now.
        let again = try await fixture.handOff(content, filename: "again.bin", server: server)
        #expect(again["verdict"] as? String == "infected")
    }

    @Test func retroscanProgressSurvivesARestart() async throws {
        let fixture = try AdminFixture()
        let signatures = try ReloadTests.signatureDirectory(in: fixture)
        let environment = ["AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES": signatures, "AIRLOCK_SCANNER_RELOAD_CHECK_SECONDS": "0"]
        var server = try await fixture.startServer(extra: environment)
        for index in 0..<5 {
            _ = try await fixture.handOff(Fixtures.randomBytes(count: 3_000, seed: UInt64(500 + index)), filename: "f\(index).bin", server: server)
        }
        _ = server.stop()
        let statusFile = fixture.directory.file("var/run/\(ProcessInfo.processInfo.hostName)/retroscan.json")
        try FileManager.default.removeItem(atPath: statusFile)
        // New signatures while the server is down: at start it checks the window with them.
        try ReloadTests.signature("Airlock.Test.Offline", marker: Fixtures.randomBytes(count: 24, seed: 3))
            .write(to: URL(fileURLWithPath: (signatures as NSString).appendingPathComponent("offline.ndb")))
        server = try await fixture.startServer(extra: environment)
        defer { _ = server.stop() }
        let done = await ProcessTable.waitFor(timeout: 60) { () -> Bool? in
            guard let data = FileManager.default.contents(atPath: statusFile),
                let status = try? JSONSerialization.jsonObject(with: data) as? [String: Any], status["running"] as? Bool == false
            else { return nil }
            return true
        }
        #expect(done == true)
        let json = try await fixture.json(["retroscan", "status"]) as? [String: Any]
        let progress = json?["progress"] as? [String: Any]
        #expect(progress?["checked"] as? Int == 5)
        #expect(progress?["pending"] as? Int == 0)
        let metric = try await ScannerSupervisionTests.metric("airlock_retroscan_checked_total", fixture: fixture, server: server)
        #expect(metric == 5)

        // Once checked, a restart with the same signatures scans nothing again.
        _ = server.stop()
        try FileManager.default.removeItem(atPath: statusFile)
        server = try await fixture.startServer(extra: environment)
        let status = statusFile
        let idle = await ProcessTable.waitFor(timeout: 60) { () -> [String: Any]? in
            guard let data = FileManager.default.contents(atPath: status),
                let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any], object["running"] as? Bool == false
            else { return nil }
            return object
        }
        #expect(idle?["checkedThisPass"] as? Int == 0)
    }

    /// curl on the server: the status.
    static func curl(_ server: ServerProcess, _ path: String, data: Data? = nil) async throws -> String {
        let scratch = try TemporaryDirectory()
        var arguments = ["-s", "--max-time", "60", "-o", scratch.file("body"), "-w", "%{http_code}"]
        if let data {
            arguments += ["-X", "PUT", "--data-binary", "@\(try scratch.write("upload", data))", "-H", "Content-Type: application/octet-stream"]
        }
        return try await ProcessRunner.run("/usr/bin/curl", arguments + ["http://127.0.0.1:\(server.port)\(path)"]).standardOutput
    }
}
