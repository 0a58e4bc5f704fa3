import AirlockCore
import ArgumentParser
import Foundation

extension Airlock {
    /// `airlock audit …`.
    struct Audit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read and verify the hash-chained audit log.",
            subcommands: [List.self, Verify.self, Anchor.self]
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
                discussion: """
                    Exit code 0 when the chain is intact, 1 when an entry is named as tampered. With --anchor (as printed \
                    earlier by `airlock audit anchor` and kept off this host), the anchored entry must still be there with \
                    that hash, which also catches entries cut off the end of the log.
                    """
            )

            @OptionGroup var options: AdminOptions
            @Option(help: ArgumentHelp("An anchor printed earlier by `airlock audit anchor`.", valueName: "ID:HASH")) var anchor: String?

            func validate() throws {
                if let anchor, Administration.AuditAnchor(anchor) == nil {
                    throw ValidationError(
                        "--anchor must be ID:HASH as `airlock audit anchor` prints it (an entry id, a colon, 64 hexadecimal digits), "
                            + "got \"\(anchor)\"."
                    )
                }
            }

            func run() async throws {
                let (admin, _, _) = try await self.options.open()
                let anchor = self.anchor.flatMap(Administration.AuditAnchor.init)
                let problems = try await admin.verifyAudit(anchor: anchor)
                let count = try await admin.auditEntries().count
                if self.options.json {
                    struct Report: Encodable {
                        var entries: Int
                        var intact: Bool
                        var problems: [String]
                    }
                    try self.options.printJSON(Report(entries: count, intact: problems.isEmpty, problems: problems.map(\.description)))
                } else if problems.isEmpty {
                    print("audit log intact: \(count) entries, hash chain verified\(anchor.map { ", anchor \($0) found" } ?? "")")
                } else {
                    print("AUDIT LOG TAMPERED: \(problems.count) problem\(problems.count == 1 ? "" : "s")")
                    for problem in problems {
                        print("  \(problem)")
                    }
                }
                if !problems.isEmpty { throw ExitCode.found }
            }
        }

        struct Anchor: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Print the head of the audit chain to keep off this host.",
                discussion: """
                    Keep the printed ID:HASH somewhere an attacker on this host cannot change (a ticket, another machine, \
                    paper). `airlock audit verify --anchor ID:HASH` then fails if that entry is gone or different: entries \
                    cut off the end of the log, or a chain rewritten up to it.
                    """
            )

            @OptionGroup var options: AdminOptions

            func run() async throws {
                let (admin, _, _) = try await self.options.open()
                let head = try await admin.auditHead()
                let anchor = Administration.AuditAnchor(id: head.id ?? 0, hash: head.hash)
                if self.options.json {
                    struct Shown: Encodable {
                        var id: Int64
                        var hash: String
                        var anchor: String
                        var at: Date
                        var action: String
                    }
                    try self.options.printJSON(Shown(id: anchor.id, hash: anchor.hash, anchor: anchor.description, at: head.at, action: head.action))
                } else {
                    print(anchor)
                    print(
                        "entry \(anchor.id) (\(Output.escaped(head.action)), \(Output.time(head.at))): keep this line off this host, and check with"
                    )
                    print("  airlock audit verify --anchor \(anchor)")
                }
            }
        }
    }
}
