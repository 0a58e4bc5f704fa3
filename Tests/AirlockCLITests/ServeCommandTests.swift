import AirlockTestSupport
import Foundation
import Testing

@Suite("airlock serve as a process")
struct ServeCommandTests {
    private func environment(_ directory: TemporaryDirectory) -> [String: String] {
        var environment = AirlockCommand.hermetic
        environment["AIRLOCK_STORAGE_DATA_DIRECTORY"] = directory.file("var")
        environment["AIRLOCK_STORAGE_QUARANTINE_DIRECTORY"] = directory.file("Quarantine")
        return environment
    }

    @Test func startsWarnsAndStopsGracefullyDiscardingAnUnfinishedUpload() async throws {
        let directory = try TemporaryDirectory()
        let server = try await ServerProcess.start(
            executable: AirlockCommand.executable,
            directory: Fixtures.packageRoot.path,
            environment: self.environment(directory)
        )
        #expect(server.startupLog.contains("development secrets in use"))
        #expect(server.startupLog.contains("ONLY AIRLOCK'S BUNDLED TEST SIGNATURES ARE LOADED"))

        // A complete hand-off first.
        let complete = try await ProcessRunner.run(
            "/usr/bin/curl",
            [
                "-s", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}", "-H", "Authorization: Bearer dev-api-key-change-me",
                "--data-binary", "kept", "http://127.0.0.1:\(server.port)/v1/transfers?sender=a@x.org&recipient=b@x.org&filename=k.txt",
            ]
        )
        #expect(complete.standardOutput == "201")

        // Then an upload that stops half-way; the server is told to stop while it is in flight.
        let connection = try RawConnection(port: server.port)
        let head = """
            POST /v1/transfers?sender=a@x.org&recipient=b@x.org&filename=half.bin HTTP/1.1\r
            Host: 127.0.0.1\r
            Authorization: Bearer dev-api-key-change-me\r
            Content-Length: 1000000\r
            \r

            """
        #expect(connection.send(Data(head.utf8) + Data(count: 100_000)))
        kill(server.pid, SIGTERM)
        connection.close()
        #expect(await server.stopped(timeout: 60) == 0)

        // Nothing half-written survives; the complete transfer is stored.
        // (Staging holds one directory per node; no file in any of them.)
        #expect(TemporaryDirectory.regularFiles(under: directory.file("var/staging")).isEmpty)
        let stored = FileManager.default.enumerator(atPath: directory.file("var/files"))?.allObjects.compactMap { $0 as? String }
            .filter { $0.count > 60 }
        #expect(stored?.count == 1)
    }
}
