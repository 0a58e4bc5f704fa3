import AirlockCore
import AirlockTestSupport

/// The ledger implementations `LedgerContractTests` runs against: every test runs once per case.
enum LedgerBackend: String, CaseIterable, CustomStringConvertible, Sendable {
    /// ``SQLiteLedger`` in a fresh temporary directory.
    case sqlite

    var description: String { self.rawValue }

    /// A fresh, empty, migrated ledger of this kind, and a clean-up to call after the test.
    func open() async throws -> (ledger: any Ledger, close: @Sendable () async throws -> Void) {
        switch self {
        case .sqlite:
            let directory = try TemporaryDirectory()
            let ledger = try SQLiteLedger(path: directory.file("ledger.sqlite"))
            // The directory (and the database in it) is removed when the last reference goes: `close` holds it.
            return (
                ledger,
                {
                    await ledger.close()
                    withExtendedLifetime(directory) {}
                }
            )
        }
    }
}
