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
        let (ledgers, close) = try await self.open(count: 1, notifications: notifications)
        return (ledgers[0], close)
    }

    /// Two ledgers of this kind on one fresh store, as two nodes (or a server and a command) open it, and a clean-up
    /// to call after the test.
    func openTwo() async throws -> (first: any Ledger, second: any Ledger, close: @Sendable () async throws -> Void) {
        let (ledgers, close) = try await self.open(count: 2, notifications: NotificationRouter())
        return (ledgers[0], ledgers[1], close)
    }

    /// `count` ledgers on one fresh, empty, migrated store (the same database file, the same PostgreSQL database).
    private func open(count: Int, notifications: NotificationRouter) async throws -> ([any Ledger], @Sendable () async throws -> Void) {
        switch self {
        case .sqlite:
            let directory = try TemporaryDirectory()
            let ledgers = try (0..<count).map { _ in try SQLiteLedger(path: directory.file("ledger.sqlite"), notifications: notifications) }
            // The directory (and the database in it) is removed when the last reference goes: `close` holds it.
            return (
                ledgers,
                {
                    for ledger in ledgers { await ledger.close() }
                    withExtendedLifetime(directory) {}
                }
            )
        case .postgresql:
            let (url, drop) = try await PostgresTestServer.createDatabase()
            var logger = Logger(label: "airlock.test.postgres")
            logger.logLevel = .warning
            let configuration = try AirlockConfiguration.PostgreSQL.parse(url)
            var ledgers: [PostgresLedger] = []
            for _ in 0..<count {
                ledgers.append(try await PostgresLedger.connect(configuration, notifications: notifications, logger: logger))
            }
            let opened = ledgers
            return (
                opened,
                {
                    for ledger in opened { await ledger.close() }
                    try await drop()
                }
            )
        }
    }
}
