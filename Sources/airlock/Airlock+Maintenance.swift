import AirlockCore
import ArgumentParser
import Foundation

extension Airlock {
    /// `airlock purge`.
    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Apply the retention policy: remove old bytes, keep the rows as purged.",
            discussion: "Safe to run from cron while the server runs."
        )

        @OptionGroup var options: AdminOptions
        @Flag(help: "Show what would be purged without changing anything.") var dryRun = false
        @Option(help: .hidden) var now: String?

        func validate() throws {
            if let now, parseDate(now) == nil { throw ValidationError("--now must be an ISO 8601 date.") }
        }

        func run() async throws {
            let (admin, configuration, _) = try await self.options.open(now: self.now.flatMap(parseDate))
            let report = try await admin.purge(dryRun: self.dryRun)
            let items = report.items
            if self.options.json {
                struct Item: Encodable {
                    var id: String
                    var previousState: String
                    var createdAt: Date
                    var size: Int64
                }
                try self.options.printJSON(items.map { Item(id: $0.id, previousState: $0.state.rawValue, createdAt: $0.createdAt, size: $0.size) })
                return
            }
            let verb = self.dryRun ? "would purge" : "purged"
            Output.table(
                ["ID", "CREATED", "STATE", "SIZE"],
                items.map { [$0.id, Output.time($0.createdAt), $0.state.rawValue, Output.size($0.size)] }
            )
            let retention = configuration.retention
            print(
                "\(verb) \(items.count) transfer\(items.count == 1 ? "" : "s"), \(Output.size(items.reduce(0) { $0 + $1.size })) "
                    + "(retention: clean \(retention.cleanDays) days, quarantine \(retention.quarantineDays) days)"
            )
            if report.dailyQuotaCounters > 0 {
                let removed = self.dryRun ? "would remove" : "removed"
                print("\(removed) \(report.dailyQuotaCounters) per-day quota counter\(report.dailyQuotaCounters == 1 ? "" : "s") of days before yesterday (UTC)")
            }
        }
    }

    /// `airlock doctor`.
    struct Doctor: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check that ledger and disk agree.",
            discussion: "Exit code 0 when they agree, 1 when any problem is found."
        )

        @OptionGroup var options: AdminOptions

        func run() async throws {
            let (admin, _, _) = try await self.options.open()
            let progress = ProgressReporter(total: 0)
            let problems = try await admin.doctor { done, total in
                progress.total = total
                progress.update(done: done, current: "hashing stored files")
            }
            if progress.isTerminal { progress.finishedItem("") }
            if self.options.json {
                struct Problem: Encodable {
                    var kind: String
                    var path: String
                    var transferId: String?
                    var detail: String
                }
                try self.options.printJSON(
                    problems.map { Problem(kind: $0.kind.rawValue, path: $0.path, transferId: $0.transferId, detail: $0.detail) }
                )
            } else if problems.isEmpty {
                print("ledger and disk agree")
            } else {
                Output.table(
                    ["PROBLEM", "TRANSFER", "PATH", "DETAIL"],
                    problems.map { [$0.kind.rawValue, $0.transferId ?? "-", $0.path, $0.detail] }
                )
            }
            if !problems.isEmpty { throw ExitCode.found }
        }
    }
}
