import AirlockTestSupport
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 15: signatures and configuration reload in a running `airlock serve`, without a restart.
@Suite("live reload", .serialized)
struct ReloadTests {
    /// A private copy of the bundled signatures that a test may change.
    static func signatureDirectory(in fixture: AdminFixture) throws -> String {
        let directory = fixture.directory.file("signatures")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for name in try FileManager.default.contentsOfDirectory(atPath: Fixtures.signatureDirectory) {
            try FileManager.default.copyItem(
                atPath: (Fixtures.signatureDirectory as NSString).appendingPathComponent(name),
                toPath: (directory as NSString).appendingPathComponent(name)
            )
        }
        return directory
    }

    /// `airlock serve` on a private copy of the bundled signatures, looking at them every `checkSeconds`.
    static func serverWithOwnSignatures(
        _ fixture: AdminFixture,
        checkSeconds: Int = 1,
        extra: [String: String] = [:]
    ) async throws -> (server: ServerProcess, signatures: String) {
        let signatures = try Self.signatureDirectory(in: fixture)
        let environment = ["AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES": signatures, "AIRLOCK_SCANNER_RELOAD_CHECK_SECONDS": "\(checkSeconds)"]
        return (try await fixture.startServer(extra: environment.merging(extra) { $1 }), signatures)
    }

    /// `/readyz`: the HTTP status and the JSON body.
    static func readiness(_ fixture: AdminFixture, _ server: ServerProcess) async throws -> (String, [String: Any]) {
        let (status, body) = try await fixture.fetch("/readyz", server: server)
        return (status, (try? JSONSerialization.jsonObject(with: body) as? [String: Any]) ?? [:])
    }

    /// Polls `/readyz` until `condition` holds for its body (at most `timeout` seconds); the last body.
    static func readiness(
        _ fixture: AdminFixture,
        _ server: ServerProcess,
        timeout: TimeInterval = 60,
        until condition: ([String: Any]) -> Bool
    ) async throws -> [String: Any] {
        let deadline = Date(timeIntervalSinceNow: timeout)
        var last: [String: Any] = [:]
        while Date() < deadline {
            let (status, body) = try await Self.readiness(fixture, server)
            last = body
            if status == "200", condition(body) { return body }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("/readyz never showed the expected state; last: \(last)")
        return last
    }

    /// A signature (ndb, hex) for `marker`.
    static func signature(_ name: String, marker: Data) -> Data {
        Data("\(name):0:*:\(marker.map { String(format: "%02x", $0) }.joined())\n".utf8)
    }

    /// Uploads from `clients` clients until `stop`; every answer's verdict (or the failure).
    static func uploadContinuously(_ fixture: AdminFixture, _ server: ServerProcess, clients: Int, stop: StopFlag) async throws -> [String] {
        try await withThrowingTaskGroup(of: [String].self) { group in
            for client in 0..<clients {
                group.addTask {
                    var verdicts: [String] = []
                    var index = 0
                    while !stop.isSet {
                        let size = index % 4 == 0 ? 300_000 : 12_000
                        let transfer = try await fixture.handOff(
                            Fixtures.randomBytes(count: size, seed: UInt64(9_000 + client * 10_000 + index)),
                            filename: "load-\(client)-\(index).bin",
                            server: server
                        )
                        verdicts.append(transfer["verdict"] as? String ?? "no answer: \(transfer)")
                        index += 1
                    }
                    return verdicts
                }
            }
            return try await group.reduce(into: []) { $0 += $1 }
        }
    }

    @Test func aNewSignatureIsPickedUpUnderLoadWithoutAFailedUploadAndTheOldScannerIsDrained() async throws {
        let fixture = try AdminFixture()
        let (server, signatures) = try await Self.serverWithOwnSignatures(fixture)
        defer { _ = server.stop() }
        let before = try await Self.readiness(fixture, server) { _ in true }
        let firstVersion = try #require(before["signatureVersion"] as? String)
        #expect(before["lastReloadError"] == nil)
        let firstScanner = try await ScannerSupervisionTests.scanner(of: server)

        let marker = Fixtures.randomBytes(count: 24, seed: 4242)
        let stop = StopFlag()
        async let load = Self.uploadContinuously(fixture, server, clients: 4, stop: stop)
        // A signature arrives while uploads run (as freshclam writes one: to a new name, then renamed in place).
        let temporary = fixture.directory.file("recall.ndb.tmp")
        try Self.signature("Airlock.Test.Recall", marker: marker).write(to: URL(fileURLWithPath: temporary))
        try FileManager.default.moveItem(atPath: temporary, toPath: (signatures as NSString).appendingPathComponent("recall.ndb"))
        let after = try await Self.readiness(fixture, server) { ($0["signatureVersion"] as? String).map { $0 != firstVersion } ?? false }
        stop.set()
        let verdicts = try await load

        #expect(after["status"] as? String == "ready")
        #expect((after["signatures"] as? Int ?? 0) == (before["signatures"] as? Int ?? 0) + 1)
        #expect(after["signaturesLoadedAt"] as? String != before["signaturesLoadedAt"] as? String)
        #expect(!verdicts.isEmpty)
        #expect(verdicts.allSatisfy { $0 == "clean" }, "every upload during the reload was answered clean: \(Set(verdicts))")

        // The new signature detects; the old scanner process was drained and exited, a new one serves.
        var infected = Fixtures.randomBytes(count: 5_000, seed: 77)
        infected.append(marker)
        let transfer = try await fixture.handOff(infected, filename: "new.bin", server: server)
        #expect(transfer["verdict"] as? String == "infected")
        #expect((transfer["signature"] as? String)?.hasPrefix("Airlock.Test.Recall") == true)
        let gone = await ProcessTable.waitFor(timeout: 30) { kill(firstScanner, 0) != 0 ? true : nil }
        #expect(gone == true, "the old scanner process (pid \(firstScanner)) exited after its last scan")
        let current = try await ScannerSupervisionTests.scanner(of: server)
        #expect(current != firstScanner)

        let reloaded = try await fixture.auditEntries(action: "signatures.reloaded")
        #expect(reloaded.count == 1)
        #expect(reloaded.first?.details["previousVersion"] == firstVersion)
        #expect(reloaded.first?.details["trigger"] == "check")
        let metric = try await ScannerSupervisionTests.metric(
            "airlock_signature_reloads_total{outcome=\"reloaded\"}",
            fixture: fixture,
            server: server
        )
        #expect(metric == 1)
    }

    @Test func aCorruptSignatureFileKeepsTheOldSignaturesAndAFixedOneIsPickedUp() async throws {
        let receiver = try await WebhookReceiver.start(secret: WebhookTests.secret)
        let fixture = try AdminFixture(extra: WebhookTests.environment(port: receiver.port))
        let (server, signatures) = try await Self.serverWithOwnSignatures(fixture)
        defer { _ = server.stop() }
        let before = try await Self.readiness(fixture, server) { _ in true }
        let firstVersion = try #require(before["signatureVersion"] as? String)

        let broken = (signatures as NSString).appendingPathComponent("broken.ndb")
        try Data("this line is not a signature\n".utf8).write(to: URL(fileURLWithPath: broken))
        let failed = try await Self.readiness(fixture, server) { $0["lastReloadError"] != nil }
        #expect(failed["status"] as? String == "ready")
        #expect(failed["signatureVersion"] as? String == firstVersion)
        let error = failed["lastReloadError"] as? String ?? ""
        #expect(error.contains("broken.ndb"), "the error names the file: \(error)")
        // Still scanning with the old signatures.
        let clean = try await fixture.handOff(Fixtures.randomBytes(count: 10_000, seed: 5), filename: "a.bin", server: server)
        #expect(clean["verdict"] as? String == "clean")
        let metric = try await ScannerSupervisionTests.metric("airlock_signature_reloads_total{outcome=\"failed\"}", fixture: fixture, server: server)
        #expect(metric >= 1)
        let audited = try await fixture.auditEntries(action: "signatures.reloadFailed")
        #expect(audited.first?.details["error"]?.contains("broken.ndb") == true)
        let failure = try await receiver.requests(until: "signatures.reloadFailed") { $0.contains { $0.event == "signatures.reloadFailed" } }
            .first { $0.event == "signatures.reloadFailed" }
        #expect(failure?.signatureIsValid == true)
        #expect("\(failure?.json ?? [:])".contains("broken.ndb"), "the event names the file: \(failure?.json ?? [:])")

        // Fixed: the next check loads it.
        let marker = Fixtures.randomBytes(count: 24, seed: 99)
        try Self.signature("Airlock.Test.Fixed", marker: marker).write(to: URL(fileURLWithPath: broken))
        let fixed = try await Self.readiness(fixture, server) { $0["lastReloadError"] == nil && $0["signatureVersion"] as? String != firstVersion }
        #expect(fixed["lastReloadError"] == nil)
        var infected = Fixtures.randomBytes(count: 1_000, seed: 6)
        infected.append(marker)
        let detected = try await fixture.handOff(infected, filename: "b.bin", server: server)
        #expect((detected["signature"] as? String)?.hasPrefix("Airlock.Test.Fixed") == true)
        await receiver.stop()
    }

    @Test func aBlockingReloadMakesUploadsWaitNeverFail() async throws {
        let fixture = try AdminFixture()
        let (server, signatures) = try await Self.serverWithOwnSignatures(
            fixture,
            checkSeconds: 0,
            extra: ["AIRLOCK_SCANNER_RELOAD_MODE": "blocking"]
        )
        defer { _ = server.stop() }
        let before = try await Self.readiness(fixture, server) { _ in true }
        let firstScanner = try await ScannerSupervisionTests.scanner(of: server)

        let stop = StopFlag()
        async let load = Self.uploadContinuously(fixture, server, clients: 3, stop: stop)
        try Self.signature("Airlock.Test.Blocking", marker: Fixtures.randomBytes(count: 24, seed: 1))
            .write(to: URL(fileURLWithPath: (signatures as NSString).appendingPathComponent("blocking.ndb")))
        // With reloadCheckSeconds 0, only a request reloads.
        let reload = try await fixture.airlock(["reload"], extra: ["AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES": signatures])
        stop.set()
        let verdicts = try await load

        #expect(reload.status == 0, "\(reload.standardOutput)\(reload.standardError)")
        #expect(reload.standardOutput.contains("signatures: reloaded"), "\(reload.standardOutput)")
        #expect(verdicts.allSatisfy { $0 == "clean" }, "\(Set(verdicts))")
        let after = try await Self.readiness(fixture, server) { _ in true }
        #expect(after["signatureVersion"] as? String != before["signatureVersion"] as? String)
        // Blocking: the old scanner is gone before the new one started.
        #expect(kill(firstScanner, 0) != 0)
    }

    @Test func aSlowUploadDoesNotHoldABlockingReload() async throws {
        let fixture = try AdminFixture()
        let (server, signatures) = try await Self.serverWithOwnSignatures(
            fixture,
            checkSeconds: 0,
            extra: ["AIRLOCK_SCANNER_RELOAD_MODE": "blocking"]
        )
        defer { _ = server.stop() }
        // 800 kB at 80 kB/s: inspected while it is received, by the generation the reload replaces.
        let slow = try fixture.directory.write("slow.bin", Fixtures.randomBytes(count: 800_000, seed: 12))
        async let upload = ProcessRunner.run(
            "/usr/bin/curl",
            [
                "-s", "--max-time", "120", "--limit-rate", "80k", "-H", "Authorization: Bearer dev-api-key-change-me",
                "--data-binary", "@\(slow)",
                "http://127.0.0.1:\(server.port)/v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename=slow.bin",
            ]
        )
        let staging = (fixture.dataDirectory as NSString).appendingPathComponent("staging")
        let arriving = await ProcessTable.waitFor(timeout: 30) { TemporaryDirectory.regularFiles(under: staging).isEmpty ? nil : true }
        #expect(arriving == true)
        try Self.signature("Airlock.Test.Slow", marker: Fixtures.randomBytes(count: 24, seed: 13))
            .write(to: URL(fileURLWithPath: (signatures as NSString).appendingPathComponent("slow.ndb")))
        let reload = try await fixture.airlock(["reload"])
        #expect(reload.status == 0, "\(reload.standardOutput)\(reload.standardError)")
        let statusFile = fixture.directory.file("var/run/\(ProcessInfo.processInfo.hostName)/reload-status.json")
        let status = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: statusFile))) as? [String: Any]
        let transfer = try JSONSerialization.jsonObject(with: Data(try await upload.standardOutput.utf8)) as? [String: Any]
        #expect(transfer?["verdict"] as? String == "clean")
        // The reload finished while the upload was still arriving: it did not wait for the slow sender (the upload
        // was inspected after its last byte, by the new signatures).
        let reloaded = try #require((status?["finishedAt"] as? String).flatMap { ISO8601DateFormatter().date(from: $0) })
        let created = try #require((transfer?["createdAt"] as? String).flatMap { ISO8601DateFormatter().date(from: $0) })
        #expect(reloaded < created, "reload finished \(reloaded), upload recorded \(created)")
    }

    @Test func reloadWithoutARunningServerSaysSo() async throws {
        let fixture = try AdminFixture()
        let result = try await fixture.airlock(["reload"])
        #expect(result.status == 2)
        #expect(result.standardError.contains("no running server found"), "\(result.standardError)")
    }

    /// The shipped configuration with `change` applied, written to `name`.
    static func configuration(_ fixture: AdminFixture, _ name: String, _ change: (inout [String: Any]) -> Void) throws -> String {
        let shipped = try Data(contentsOf: Fixtures.packageRoot.appendingPathComponent("Config/airlock.json"))
        var object = try JSONSerialization.jsonObject(with: shipped) as? [String: Any] ?? [:]
        change(&object)
        return try fixture.directory.write(name, try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
    }

    static func set(_ object: inout [String: Any], _ path: [String], _ value: Any) {
        guard let first = path.first else { return }
        if path.count == 1 {
            object[first] = value
        } else {
            var inner = object[first] as? [String: Any] ?? [:]
            Self.set(&inner, Array(path.dropFirst()), value)
            object[first] = inner
        }
    }

    @Test func configCheckValidatesAFileWithoutStartingAnything() async throws {
        let fixture = try AdminFixture()
        let valid = try Self.configuration(fixture, "valid.json") { Self.set(&$0, ["scanner", "reloadMode"], "blocking") }
        let ok = try await fixture.airlock(["config", "check", "--config", valid])
        #expect(ok.status == 0, "\(ok.standardError)")
        #expect(ok.standardOutput.contains("configuration OK"))
        #expect(!FileManager.default.fileExists(atPath: fixture.dataDirectory), "nothing was started or created")

        let invalid = try Self.configuration(fixture, "invalid.json") { Self.set(&$0, ["scanner", "reloadMode"], "sometimes") }
        let refused = try await fixture.airlock(["config", "check", "--config", invalid])
        #expect(refused.status == 2)
        #expect(refused.standardError.contains("scanner.reloadMode"), "\(refused.standardError)")

        let badCertificate = try Self.configuration(fixture, "tls.json") {
            Self.set(&$0, ["http", "tls"], ["certificateFile": "/nonexistent.pem", "privateKeyFile": "/nonexistent.key"])
        }
        let noCertificate = try await fixture.airlock(["config", "check", "--config", badCertificate])
        #expect(noCertificate.status == 2)
        #expect(noCertificate.standardError.contains("http.tls.certificateFile"), "\(noCertificate.standardError)")
    }

    /// A self-signed certificate for 127.0.0.1 with common name `name`, written over `certificate` and `key`.
    static func makeCertificate(_ name: String, certificate: String, key: String) throws {
        let result = try ProcessRunner.runBlocking(
            "/usr/bin/openssl",
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", certificate,
                "-days", "2", "-subj", "/CN=\(name)", "-addext", "subjectAltName=IP:127.0.0.1",
            ]
        )
        guard result.status == 0 else { throw ProcessRunner.Failure(command: "openssl", result: result) }
    }

    /// The common name of the certificate a new TLS connection to `port` gets.
    static func servedCertificateSubject(port: Int) async throws -> String {
        let result = try await ProcessRunner.run(
            "/bin/sh",
            ["-c", "openssl s_client -connect 127.0.0.1:\(port) </dev/null 2>/dev/null | openssl x509 -noout -subject"]
        )
        return result.standardOutput
    }

    /// curl over HTTPS (any certificate): the status and the body.
    static func curl(_ arguments: [String], port: Int, path: String) async throws -> (String, Data) {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("reload-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: output) }
        let result = try await ProcessRunner.run(
            "/usr/bin/curl",
            ["-sk", "--max-time", "60", "-o", output, "-w", "%{http_code}"] + arguments + ["https://127.0.0.1:\(port)\(path)"]
        )
        return (result.standardOutput, (try? Data(contentsOf: URL(fileURLWithPath: output))) ?? Data())
    }

    static func handOff(_ file: String, key: String, port: Int, rate: String? = nil) async throws -> (String, [String: Any]) {
        var arguments = ["-H", "Authorization: Bearer \(key)", "--data-binary", "@\(file)"]
        if let rate { arguments += ["--limit-rate", rate] }
        let (status, body) = try await Self.curl(
            arguments,
            port: port,
            path: "/v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename=f.bin"
        )
        return (status, (try? JSONSerialization.jsonObject(with: body) as? [String: Any]) ?? [:])
    }

    static func downloadPath(_ transfer: [String: Any]) -> String? {
        let url = (transfer["downloads"] as? [[String: Any]])?.first?["url"] as? String
        guard let url, let range = url.range(of: "/v1/") else { return nil }
        return String(url[range.lowerBound...])
    }

    @Test func sighupRotatesAPIKeysTokenKeysAndTheCertificateWithoutARestart() async throws {
        let fixture = try AdminFixture()
        let certificate = fixture.directory.file("server.pem")
        let key = fixture.directory.file("server.key")
        try Self.makeCertificate("airlock-before", certificate: certificate, key: key)
        let oldKey = "old-im-key-0123456789abcdef"
        let newKey = "new-im-key-fedcba9876543210"
        func write(apiKey: String, tokenKeyId: String, tokenKey: String) throws -> String {
            try Self.configuration(fixture, "airlock.json") {
                Self.set(&$0, ["http", "tls"], ["certificateFile": certificate, "privateKeyFile": key])
                Self.set(&$0, ["servers"], ["im": ["apiKeys": [apiKey]]])
                Self.set(&$0, ["tokens", "keys"], [tokenKeyId: tokenKey])
                Self.set(&$0, ["tokens", "activeKeyId"], tokenKeyId)
            }
        }
        let configuration = try write(apiKey: oldKey, tokenKeyId: "t1", tokenKey: Data(repeating: 1, count: 32).base64EncodedString())
        let server = try await fixture.startServer(arguments: ["--config", configuration])
        defer { _ = server.stop() }
        #expect(try await Self.servedCertificateSubject(port: server.port).contains("airlock-before"))

        let small = try fixture.directory.write("small.bin", Fixtures.randomBytes(count: 2_000, seed: 1))
        let (created, first) = try await Self.handOff(small, key: oldKey, port: server.port)
        #expect(created == "201")
        let oldURL = try #require(Self.downloadPath(first))
        #expect(try await Self.curl([], port: server.port, path: oldURL).0 == "200")

        // An upload in flight across the reload: 600 kB at 100 kB/s.
        let slow = try fixture.directory.write("slow.bin", Fixtures.randomBytes(count: 600_000, seed: 2))
        async let inFlight = Self.handOff(slow, key: oldKey, port: server.port, rate: "100k")
        let staging = (fixture.dataDirectory as NSString).appendingPathComponent("staging")
        let started = await ProcessTable.waitFor(timeout: 30) { TemporaryDirectory.regularFiles(under: staging).isEmpty ? nil : true }
        #expect(started == true, "the slow upload reached the server")

        // Rotate everything; the certificate is renewed in place, as certbot does.
        try Self.makeCertificate("airlock-after", certificate: certificate, key: key)
        _ = try write(apiKey: newKey, tokenKeyId: "t2", tokenKey: Data(repeating: 2, count: 32).base64EncodedString())
        let reload = try await fixture.airlock(["reload", "--config", configuration])
        #expect(reload.status == 0, "\(reload.standardOutput)\(reload.standardError)")
        #expect(reload.standardOutput.contains("configuration: reloaded"), "\(reload.standardOutput)")
        #expect(reload.standardOutput.contains("servers") && reload.standardOutput.contains("tokens"))

        let (slowStatus, slowTransfer) = try await inFlight
        #expect(slowStatus == "201", "the upload in flight finished")
        #expect(slowTransfer["verdict"] as? String == "clean")
        #expect(kill(server.pid, 0) == 0, "same process")

        #expect(try await Self.handOff(small, key: newKey, port: server.port).0 == "201")
        #expect(try await Self.handOff(small, key: oldKey, port: server.port).0 == "401")
        // A URL signed with the removed token key is refused; a new one works.
        let refused = try await Self.curl([], port: server.port, path: oldURL).0
        #expect(refused.hasPrefix("4"), "got \(refused)")
        let (_, second) = try await Self.handOff(small, key: newKey, port: server.port)
        let newURL = try #require(Self.downloadPath(second))
        #expect(try await Self.curl([], port: server.port, path: newURL).0 == "200")
        #expect(try await Self.servedCertificateSubject(port: server.port).contains("airlock-after"))

        // An invalid file changes nothing, and says which key is wrong.
        let broken = try Self.configuration(fixture, "airlock.json") { Self.set(&$0, ["tokens", "activeKeyId"], "missing") }
        #expect(broken == configuration)
        // `airlock reload` reads the file first, and does not ask the server at all.
        let refusedReload = try await fixture.airlock(["reload", "--config", configuration])
        #expect(refusedReload.status == 2)
        #expect(refusedReload.standardError.contains("tokens.activeKeyId"), "\(refusedReload.standardError)")
        // SIGHUP straight to the server: it refuses the file, says why in its status, and keeps everything.
        let statusFile = fixture.directory.file("var/run/\(ProcessInfo.processInfo.hostName)/reload-status.json")
        let sequence =
            (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: statusFile))) as? [String: Any])?["sequence"] as? Int
        kill(server.pid, SIGHUP)
        let status = await ProcessTable.waitFor(timeout: 30) { () -> [String: Any]? in
            guard let data = FileManager.default.contents(atPath: statusFile),
                let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                object["sequence"] as? Int != sequence
            else { return nil }
            return object
        }
        #expect(status?["status"] as? String == "failed")
        #expect((status?["configurationError"] as? String)?.contains("tokens.activeKeyId") == true, "\(status ?? [:])")
        #expect(try await Self.handOff(small, key: newKey, port: server.port).0 == "201")
        #expect(try await Self.curl([], port: server.port, path: newURL).0 == "200")
    }
}

/// A flag one task sets and others read.
final class StopFlag: Sendable {
    private let value = Atomic(false)
    var isSet: Bool { self.value.load(ordering: .acquiring) }
    func set() { self.value.store(true, ordering: .releasing) }
}
