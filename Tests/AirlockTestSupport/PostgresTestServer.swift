import Foundation

/// The private PostgreSQL instance `scripts/test` starts (`AIRLOCK_TEST_POSTGRES_URL`), and a fresh database on it
/// for each test.
///
/// Without the instance (plain `swift test`), PostgreSQL cases are left out and say so; under CI they are not: a
/// missing instance is an error there, never a skip.
public enum PostgresTestServer {
    /// The instance's URL, if one was started.
    public static var url: String? { ProcessInfo.processInfo.environment["AIRLOCK_TEST_POSTGRES_URL"] }

    /// Whether PostgreSQL tests must run (CI sets `CI=true`).
    public static var isRequired: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// Whether to run PostgreSQL cases: the instance is there, or CI requires them (and they fail without it).
    public static var isAvailable: Bool {
        if Self.url == nil, !Self.isRequired {
            FileHandle.standardError.write(Data("PostgreSQL cases left out: run the suite with ./scripts/test to include them\n".utf8))
        }
        return Self.url != nil || Self.isRequired
    }

    /// Why a PostgreSQL test cannot run.
    public struct Unavailable: Error, CustomStringConvertible {
        public var description: String {
            "AIRLOCK_TEST_POSTGRES_URL is not set: run the suite with ./scripts/test, which starts a private PostgreSQL instance"
        }
    }

    /// A new, empty database on the instance, and a function that drops it.
    ///
    /// - Parameter settings: defaults set on the database (`ALTER DATABASE … SET name = value`), for tests of what a
    ///   connection makes of them.
    public static func createDatabase(settings: [(String, String)] = []) async throws -> (url: String, drop: @Sendable () async throws -> Void) {
        guard let base = Self.url, let question = base.firstIndex(of: "?"), let slash = base[..<question].lastIndex(of: "/") else {
            throw Unavailable()
        }
        let name = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        try await Self.psql(base, "CREATE DATABASE \(name)")
        for (setting, value) in settings {
            try await Self.psql(base, "ALTER DATABASE \(name) SET \(setting) = '\(value)'")
        }
        let url = String(base[...slash]) + name + String(base[question...])
        return (url, { try await Self.psql(base, "DROP DATABASE IF EXISTS \(name) WITH (FORCE)") })
    }

    private static func psql(_ url: String, _ command: String) async throws {
        let result = try await ProcessRunner.run("/usr/bin/psql", ["-q", "-v", "ON_ERROR_STOP=1", url, "-c", command])
        guard result.status == 0 else { throw ProcessRunner.Failure(command: "psql -c \(command)", result: result) }
    }
}
