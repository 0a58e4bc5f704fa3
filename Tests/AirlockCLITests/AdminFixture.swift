import AirlockTestSupport
import Foundation

/// A data directory with transfers handed off through a real `airlock serve`, for the admin commands.
final class AdminFixture: Sendable {
    let directory: TemporaryDirectory
    let environment: [String: String]

    init(extra: [String: String] = [:]) throws {
        self.directory = try TemporaryDirectory()
        var environment = AirlockCommand.hermetic
        environment["AIRLOCK_STORAGE_DATA_DIRECTORY"] = self.directory.file("var")
        environment["AIRLOCK_STORAGE_QUARANTINE_DIRECTORY"] = self.directory.file("Quarantine")
        self.environment = environment.merging(extra) { $1 }
    }

    var dataDirectory: String { self.directory.file("var") }
    var quarantineDirectory: String { self.directory.file("Quarantine") }
    var databasePath: String { self.directory.file("var/airlock.sqlite") }

    func startServer(extra: [String: String] = [:], arguments: [String] = []) async throws -> ServerProcess {
        try await ServerProcess.start(
            executable: AirlockCommand.executable,
            directory: Fixtures.packageRoot.path,
            environment: self.environment.merging(extra) { $1 },
            arguments: arguments
        )
    }

    /// Hands `content` off through the server; returns the transfer JSON.
    func handOff(_ content: Data, filename: String, server: ServerProcess, recipient: String = "bob@example.org") async throws -> [String: Any] {
        let file = try self.directory.write("upload-\(UUID().uuidString)", content)
        let result = try await ProcessRunner.run(
            "/usr/bin/curl",
            [
                "-s", "--max-time", "30", "-H", "Authorization: Bearer dev-api-key-change-me", "--data-binary", "@\(file)",
                "http://127.0.0.1:\(server.port)/v1/transfers?sender=alice@example.org&recipient=\(recipient)&filename=\(filename)",
            ]
        )
        return try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any] ?? [:]
    }

    /// Runs `airlock ARGUMENTS` on this data directory.
    func airlock(_ arguments: [String], extra: [String: String] = [:]) async throws -> ProcessRunner.Result {
        try await AirlockCommand.run(arguments, environment: self.environment.merging(extra) { $1 })
    }

    /// `airlock ARGUMENTS --json`, parsed.
    func json(_ arguments: [String]) async throws -> Any {
        let result = try await self.airlock(arguments + ["--json"])
        return try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8))
    }

    /// Fetches a URL from the server with curl; returns status and body.
    func fetch(_ url: String, method: String = "GET", body: String? = nil, server: ServerProcess) async throws -> (String, Data) {
        let output = self.directory.file("fetched-\(UUID().uuidString)")
        var arguments = ["-s", "--max-time", "30", "-o", output, "-w", "%{http_code}", "-X", method]
        if let body {
            arguments += ["-H", "Authorization: Bearer dev-api-key-change-me", "-H", "Content-Type: application/json", "--data", body]
        }
        let path = url.range(of: "/v1/").map { String(url[$0.lowerBound...]) } ?? url
        let result = try await ProcessRunner.run("/usr/bin/curl", arguments + ["http://127.0.0.1:\(server.port)\(path)"])
        return (result.standardOutput, (try? Data(contentsOf: URL(fileURLWithPath: output))) ?? Data())
    }
}

extension AdminFixture {
    /// The operating-system user the admin commands record (`admin:<user>`).
    static let operatingSystemUser = ProcessInfo.processInfo.environment["SUDO_USER"] ?? NSUserName()

    /// The audit entries with this action, oldest first, each with its details parsed.
    func auditEntries(action: String) async throws -> [(entry: [String: Any], details: [String: String])] {
        let entries = try await self.json(["audit", "list"]) as? [[String: Any]] ?? []
        return try entries.filter { $0["action"] as? String == action }.map { entry in
            let details = try JSONSerialization.jsonObject(with: Data((entry["details"] as? String ?? "").utf8)) as? [String: String]
            return (entry, details ?? [:])
        }
    }
}
