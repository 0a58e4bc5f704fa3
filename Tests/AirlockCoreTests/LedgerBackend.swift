import AirlockCore
import AirlockTestSupport
import Logging

/// The ledger implementations `LedgerContractTests` runs against: every test runs once per case.
enum LedgerBackend: String, CaseIterable, CustomStringConvertible, Sendable {
    /// ``SQLiteLedger`` in a fresh temporary directory.
    case sqlite
    /// ``PostgresLedger`` on a fresh database of the private instance `scripts/test` starts.
    case postgresql

    /// The backends to run: PostgreSQL whenever its instance is there, and always under CI (where a missing
    /// instance fails the test instead of skipping it).
    static var available: [LedgerBackend] { PostgresTestServer.isAvailable ? Self.allCases : [.sqlite] }

    var description: String { self.rawValue }

    /// A fresh, empty, migrated ledger of this kind (publishing events as `notifications` routes them), and a
    /// clean-up to call after the test.
    func open(notifications: NotificationRouter = NotificationRouter()) async throws -> (ledger: any Ledger, close: @Sendable () async throws -> Void) {
        switch self {
        case .sqlite:
            let directory = try TemporaryDirectory()
            let ledger = try SQLiteLedger(path: directory.file("ledger.sqlite"), notifications: notifications)
            // The directory (and the database in it) is removed when the last reference goes: `close` holds it.
            return (
                ledger,
                {
                    await ledger.close()
                    withExtendedLifetime(directory) {}
                }
            )
        case .postgresql:
            let (url, drop) = try await PostgresTestServer.createDatabase()
            var logger = Logger(label: "airlock.test.postgres")
            logger.logLevel = .warning
            let ledger = try await PostgresLedger.connect(try AirlockConfiguration.PostgreSQL.parse(url), notifications: notifications, logger: logger)
            return (
                ledger,
                {
                    await ledger.close()
                    try await drop()
                }
            )
        }
    }

    /// Two ledgers of this kind on one fresh store (the same database file, the same PostgreSQL database), as two
    /// nodes (or a server and a command) open it, and a clean-up to call after the test.
    func openTwo() async throws -> (first: any Ledger, second: any Ledger, close: @Sendable () async throws -> Void) {
        switch self {
        case .sqlite:
            let directory = try TemporaryDirectory()
            let first = try SQLiteLedger(path: directory.file("ledger.sqlite"), notifications: NotificationRouter())
            let second = try SQLiteLedger(path: directory.file("ledger.sqlite"), notifications: NotificationRouter())
            return (
                first,
                second,
                {
                    await first.close()
                    await second.close()
                    withExtendedLifetime(directory) {}
                }
            )
        case .postgresql:
            let (url, drop) = try await PostgresTestServer.createDatabase()
            var logger = Logger(label: "airlock.test.postgres")
            logger.logLevel = .warning
            let configuration = try AirlockConfiguration.PostgreSQL.parse(url)
            let first = try await PostgresLedger.connect(configuration, notifications: NotificationRouter(), logger: logger)
            let second = try await PostgresLedger.connect(configuration, notifications: NotificationRouter(), logger: logger)
            return (
                first,
                second,
                {
                    await first.close()
                    await second.close()
                    try await drop()
                }
            )
        }
    }
}
