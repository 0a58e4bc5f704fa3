import AirlockCore
import ArgumentParser
import Foundation

extension Airlock {
    /// `airlock retroscan`: the rescans of delivered content after a signature change.
    struct Retroscan: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Rescans of recently delivered clean content after signature changes.",
            subcommands: [Status.self]
        )

        /// `airlock retroscan status`.
        struct Status: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Show how far the running server's signatures have rescanned the retro-scan window.",
                discussion: """
                    Reads the server's state from var/run/<node>/retroscan.json and counts, in the ledger, the clean \
                    contents of the window (retroscan.windowHours) that the serving signature version has checked and \
                    has not checked yet, and the transfers recalled in the window.
                    """
            )

            @OptionGroup var options: AdminOptions

            func run() async throws {
                let (admin, configuration, _) = try await self.options.open()
                defer { Task { await admin.close() } }
                let store = FileStore(configuration.storage, node: configuration.node.id)
                let path = Retroscanner.statusPath(runDirectory: store.runDirectory)
                guard let data = FileManager.default.contents(atPath: path),
                    let status = try? JSONDecoder().decode(RetroscanStatus.self, from: data)
                else {
                    throw ValidationError(
                        "no retro-scan has run on node \(configuration.node.id) (\(path) is missing): start `airlock serve`, "
                            + "or check retroscan.windowHours (0 turns it off)"
                    )
                }
                let window = configuration.retroscan.windowHours
                let since = Date().addingTimeInterval(-Double(window) * 3600)
                let progress = try await admin.ledger.retroscanProgress(since: since, signatureVersion: status.signatureVersion)
                if self.options.json {
                    struct Shown: Encodable {
                        var server: RetroscanStatus
                        var windowHours: Int
                        var progress: RetroscanProgress
                    }
                    try self.options.printJSON(Shown(server: status, windowHours: window, progress: progress))
                    return
                }
                let total = progress.checked + progress.pending
                let percent = total == 0 ? 100 : progress.checked * 100 / total
                print("signature version   \(status.signatureVersion)")
                print("window              \(window) h (clean content handed off since \(Output.time(since)))")
                print("state               \(status.running ? "running" : "idle") (as of \(status.updatedAt))")
                print("checked             \(progress.checked) of \(total) contents (\(percent) %); \(progress.pending) pending")
                print("this pass           \(status.checkedThisPass) checked, \(status.recalledThisPass) transfers recalled")
                print("recalled in window  \(progress.recalled) transfers (airlock quarantine list shows them)")
                if let error = status.lastError {
                    print("last pass stopped   \(error)")
                }
            }
        }
    }
}
