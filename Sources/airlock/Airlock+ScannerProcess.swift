import AirlockCore
import ArgumentParser
import Foundation
import Logging

extension Airlock {
    /// `airlock scanner-process`: the confined scanner that `airlock serve` (and `scan`) start and supervise. Not
    /// for running by hand: it takes its settings over descriptor 3 from the broker.
    struct ScannerProcess: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "scanner-process",
            abstract: "The confined scanner process (started by airlock serve; not for running by hand).",
            shouldDisplay: false
        )

        @Option(help: "The broker's pid: the scanner dies with it.")
        var parent: Int32

        func run() throws {
            var logger = Logger(label: "airlock.scanner") { StreamLogHandler.standardError(label: $0) }
            logger.logLevel = .notice
            let status = ScannerService.run(parent: self.parent, logger: logger)
            if status != 0 {
                throw ExitCode(status)
            }
        }
    }
}
