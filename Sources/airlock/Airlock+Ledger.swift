import AirlockCore
import ArgumentParser
import Foundation

extension Airlock {
    /// `airlock ledger …`.
    struct Ledger: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move the ledger between engines.",
            subcommands: [Copy.self]
        )

        struct Copy: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Copy this ledger into an empty PostgreSQL ledger.",
                discussion: """
                    Run with --config naming the ledger to copy (the SQLite one of a single node) and --to naming the \
                    configuration of the PostgreSQL one. Every row is copied: transfers, recipients, token issuances, \
                    downloads, XEP-0363 slots, cached verdicts, the webhook outbox, and the audit log with its ids and hashes, so \
                    `airlock audit verify` holds on the target, with an anchor taken before the copy too. The target \
                    database must be empty (create it, and start no `airlock serve` on it before the copy); the copy is \
                    one transaction, so an interrupted copy leaves it empty.

                    The bytes are not copied: clean files and the quarantine stay in the directories storage.dataDirectory \
                    and storage.quarantineDirectory name. Move them to the shared mount the nodes use (or mount them there), \
                    with the same quarantine keys. Stop the broker first: hand-offs made during or after the copy stay in \
                    the old ledger. Both configurations are read with the same AIRLOCK_* environment overrides.
                    """
            )

            @OptionGroup var options: AdminOptions
            @Option(help: ArgumentHelp("The configuration file that names the PostgreSQL ledger to copy into.", valueName: "CONFIG"))
            var to: String

            func run() async throws {
                let (admin, _, logger) = try await self.options.open()
                let target = try AirlockConfiguration.load(file: self.to)
                let report = try await admin.copyLedger(to: target, logger: logger) { step in
                    switch step {
                    case .read(let counts):
                        Self.progress("read \(counts)")
                    case .wrote(let table, let count):
                        Self.progress("copied \(count) \(table.label)")
                    }
                }
                await admin.close()
                if report.source.isEmpty {
                    Self.progress("the source ledger is empty: nothing was copied (is --config the broker's configuration?)")
                }
                if self.options.json {
                    try self.options.printJSON(report)
                    return
                }
                print("copied \(report.target) into the PostgreSQL ledger of \(self.to)")
                if let head = report.auditHead {
                    print("audit chain head \(head): check the copy with")
                    print("  airlock audit verify --config \(self.to) --anchor \(head)")
                }
                print("the bytes stay in storage.dataDirectory and storage.quarantineDirectory: share or move them to the nodes")
            }

            private static func progress(_ line: String) {
                FileHandle.standardError.write(Data("ledger copy: \(line)\n".utf8))
            }
        }
    }
}
