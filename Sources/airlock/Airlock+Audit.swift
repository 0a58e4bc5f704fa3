import AirlockCore
import ArgumentParser
import Foundation

extension Airlock {
    /// `airlock audit …`.
    struct Audit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read and verify the hash-chained audit log.",
            subcommands: [List.self, Verify.self]
        )

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List audit entries, oldest first.")

            @OptionGroup var options: AdminOptions
            @Option(help: "Only entries about this transfer.") var transfer: String?
            @Option(help: "Only the last N entries.") var limit: Int?

            func run() async throws {
                let (admin, _, _) = try await self.options.open()
                let entries = try await admin.auditEntries(transferId: self.transfer, limit: self.limit)
                if self.options.json {
                    try self.options.printJSON(entries)
                } else {
                    Output.audit(entries)
                }
            }
        }

        struct Verify: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Check that no audit entry was altered, removed or reordered.",
                discussion: "Exit code 0 when the chain is intact, 1 when an entry is named as tampered."
            )

            @OptionGroup var options: AdminOptions

            func run() async throws {
                let (admin, _, _) = try await self.options.open()
                let problems = try await admin.verifyAudit()
                let count = try await admin.auditEntries().count
                if self.options.json {
                    struct Report: Encodable {
                        var entries: Int
                        var intact: Bool
                        var problems: [String]
                    }
                    try self.options.printJSON(Report(entries: count, intact: problems.isEmpty, problems: problems.map(\.description)))
                } else if problems.isEmpty {
                    print("audit log intact: \(count) entries, hash chain verified")
                } else {
                    print("AUDIT LOG TAMPERED: \(problems.count) problem\(problems.count == 1 ? "" : "s")")
                    for problem in problems {
                        print("  \(problem)")
                    }
                }
                if !problems.isEmpty { throw ExitCode.found }
            }
        }
    }
}
