import AirlockCore
import ArgumentParser
import Foundation

/// The `airlock` command: the broker and its admin tools.
@main
struct Airlock: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "airlock",
        abstract: "Quarantine and scan files handed off by instant-messaging servers.",
        version: "0.1.0",
        subcommands: [
            Serve.self, Reload.self, Config.self, Retroscan.self, Scan.self, Transfers.self, Quarantine.self, Token.self, Audit.self, Purge.self,
            Doctor.self, Ledger.self, Quotas.self, ScannerProcess.self,
        ]
    )

    /// Runs the command with Airlock's exit codes: 0 success, 1 "found", 2 usage or operational error.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var command = command as? any AsyncParsableCommand {
                try await command.run()
            } else {
                try command.run()
            }
        } catch let code as ExitCode {
            Foundation.exit(code.rawValue)
        } catch {
            if exitCode(for: error) == .success {
                // --help and --version.
                exit(withError: error)
            }
            var message = fullMessage(for: error)
            if message.hasPrefix("Error: ") {
                message.removeFirst("Error: ".count)
            }
            if let advice = operationalAdvice(for: error) {
                message += "\n\(advice)"
            }
            FileHandle.standardError.write(Data("airlock: \(message)\n".utf8))
            Foundation.exit(ExitCode.operationalError.rawValue)
        }
    }
}

extension ExitCode {
    /// Something was found: an infected or blocked file (`scan`), problems (`doctor`, `audit verify`).
    static let found = ExitCode(1)
    /// Usage or operational error.
    static let operationalError = ExitCode(2)
}
