import AirlockCore
import ArgumentParser
import Foundation

extension Airlock.Quarantine {
    /// `airlock quarantine rekey`.
    struct Rekey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-encrypt every quarantined file under the active quarantine key.",
            discussion: """
                Files already under storage.activeQuarantineKeyId are skipped, so a rerun continues where an interrupted \
                run stopped. Each file is encrypted again into a temporary file, synced and renamed over the old one, and \
                recorded in the audit log (quarantine.rekeyed). Ctrl-C or SIGTERM stops after the current file (exit 130). \
                A file that no configured key opens is reported and left as it is (exit 1). Once a run reports no \
                problem, the retired keys can be removed from storage.quarantineKeys.
                """
        )

        @OptionGroup var options: AdminOptions

        /// What a run did, for `--json`.
        struct Report: Encodable {
            struct Rekeyed: Encodable {
                var id: String
                var fromKeyId: String
            }
            struct Problem: Encodable {
                var id: String
                var problem: String
            }
            var activeKeyId: String
            var total: Int
            var rekeyed: [Rekeyed] = []
            var alreadyActive = 0
            var gone = 0
            var problems: [Problem] = []
            var interrupted = false
        }

        func run() async throws {
            let (admin, configuration, _) = try await self.options.open()
            let ids = try await admin.quarantinedTransferIds()
            let interruption = Interruption()
            let progress = ProgressReporter(total: ids.count)
            var report = Report(activeKeyId: configuration.storage.activeQuarantineKeyId, total: ids.count)
            for (index, id) in ids.enumerated() {
                if interruption.requested {
                    report.interrupted = true
                    break
                }
                progress.update(done: index, current: id)
                do {
                    switch try await admin.rekeyQuarantined(id: id) {
                    case .alreadyActive:
                        report.alreadyActive += 1
                    case .rekeyed(let fromKeyId):
                        report.rekeyed.append(.init(id: id, fromKeyId: fromKeyId))
                        progress.finishedItem("\(id): \(fromKeyId) -> \(report.activeKeyId)")
                    case .gone:
                        report.gone += 1
                        progress.finishedItem("\(id): left the quarantine meanwhile; skipped")
                    }
                } catch let error as AdminError {
                    report.problems.append(.init(id: id, problem: error.description))
                    progress.finishedItem("\(id): PROBLEM: \(error)")
                }
            }
            let done = report.rekeyed.count + report.alreadyActive + report.gone + report.problems.count
            progress.update(done: done, current: nil)
            progress.end()
            try self.print(report)
            if report.interrupted {
                FileHandle.standardError.write(
                    Data("airlock: interrupted after \(done) of \(ids.count); run `airlock quarantine rekey` again to continue\n".utf8)
                )
                throw ExitCode(130)
            }
            if !report.problems.isEmpty { throw ExitCode.found }
        }

        private func print(_ report: Report) throws {
            if self.options.json {
                try self.options.printJSON(report)
                return
            }
            Swift.print(
                "re-encrypted \(report.rekeyed.count) of \(report.total) quarantined file\(report.total == 1 ? "" : "s") "
                    + "under key \(report.activeKeyId); \(report.alreadyActive) already were"
            )
            if !report.problems.isEmpty {
                Swift.print("PROBLEMS: \(report.problems.count == 1 ? "1 file left as it is" : "\(report.problems.count) files left as they are")")
                for problem in report.problems {
                    Swift.print("  \(problem.id): \(problem.problem)")
                }
            }
        }
    }
}
