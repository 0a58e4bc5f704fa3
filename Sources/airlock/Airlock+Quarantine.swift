import AirlockCore
import ArgumentParser
import Foundation
import Logging
import Synchronization

extension Airlock {
    /// `airlock quarantine …`.
    struct Quarantine: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List, inspect, release, delete, rescan, export and re-encrypt quarantined transfers.",
            subcommands: [List.self, Show.self, Release.self, Delete.self, Rescan.self, Export.self, Rekey.self]
        )

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List quarantined transfers, newest first.")

            @OptionGroup var options: AdminOptions
            @Option(help: "At most this many.") var limit = 100

            func run() async throws {
                let (admin, _, _) = try await self.options.open()
                let transfers = try await admin.transfers(.init(states: [.quarantined], limit: self.limit))
                if self.options.json {
                    try self.options.printJSON(transfers.map(\.document))
                    return
                }
                // Who already has a recalled file: the recipients whose downloads were served.
                var downloadedBy: [String: String] = [:]
                for summary in transfers where summary.record.recalledAt != nil {
                    let served = try await admin.detail(id: summary.record.id).downloads.filter { $0.status == 200 || $0.status == 206 }
                    downloadedBy[summary.record.id] = Set(served.map { $0.recipient ?? "(XEP-0363 download)" }).sorted().joined(separator: ",")
                }
                Output.table(
                    ["ID", "CREATED", "SENDER", "RECIPIENTS", "FILENAME", "SIZE", "SHA256", "DETECTED TYPE", "CLASS", "VERDICT", "RECALLED", "DOWNLOADED BY"],
                    transfers.map { summary in
                        let record = summary.record
                        return [
                            record.id, Output.time(record.createdAt), record.sender, summary.recipients.joined(separator: ","),
                            record.filename, Output.size(record.size), String(record.sha256.prefix(16)) + "…", record.detectedType ?? "-",
                            record.contentClass.rawValue, Output.verdict(record), record.recalledAt.map(Output.time) ?? "-",
                            downloadedBy[record.id].map { $0.isEmpty ? "nobody" : $0 } ?? "-",
                        ]
                    }
                )
            }
        }

        struct Show: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Show a quarantined transfer with its audit history.")

            @OptionGroup var options: AdminOptions
            @Argument(help: "The transfer id.") var id: String

            func run() async throws {
                let (admin, _, _) = try await self.options.open()
                try await showTransfer(admin.detail(id: self.id), options: self.options)
            }
        }

        struct Release: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Rescan a quarantined transfer and release it.",
                discussion: "A transfer still found not clean is refused (exit 1) unless --force is given."
            )

            @OptionGroup var options: AdminOptions
            @Argument(help: "The transfer id.") var id: String
            @Option(help: "Why it is released (recorded in the audit log; required).") var reason: String?
            @Flag(help: "Release even if the rescan is not clean.") var force = false

            func validate() throws { try requireReason(self.reason) }

            func run() async throws {
                let (admin, configuration, logger) = try await self.options.open()
                let inspector = try await Inspector.start(configuration: configuration, logger: logger)
                let released: Result<Administration.RescanOutcome, any Error>
                do {
                    released = .success(try await admin.release(id: self.id, reason: self.reason ?? "", force: self.force, inspector: inspector))
                } catch {
                    released = .failure(error)
                }
                // Before anything can exit: the scanner process stops and its scratch directory goes.
                try? await inspector.shutdown()
                do {
                    let outcome = try released.get()
                    if self.options.json {
                        try self.options.printJSON(RescanLine(outcome, state: .released))
                    } else {
                        print("released \(outcome.id): rescan \(outcome.current) (was \(outcome.previous)); it is downloadable now")
                    }
                } catch let refusal as Administration.ReleaseRefusal {
                    FileHandle.standardError.write(Data("airlock: \(refusal)\n".utf8))
                    throw ExitCode.found
                }
            }
        }

        struct Delete: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Delete a quarantined transfer's bytes; the ledger row stays.")

            @OptionGroup var options: AdminOptions
            @Argument(help: "The transfer id.") var id: String
            @Option(help: "Why it is deleted (recorded in the audit log; required).") var reason: String?

            func validate() throws { try requireReason(self.reason) }

            func run() async throws {
                let (admin, _, _) = try await self.options.open()
                try await admin.deleteQuarantined(id: self.id, reason: self.reason ?? "")
                if !self.options.json {
                    print("deleted \(self.id)")
                } else {
                    try self.options.printJSON(["id": self.id, "state": TransferState.deleted.rawValue])
                }
            }
        }

        struct Rescan: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Rescan quarantined transfers with the current signatures.",
                discussion: "A transfer now found clean stays quarantined until released. Ctrl-C stops after the current file."
            )

            @OptionGroup var options: AdminOptions
            @Argument(help: "Transfer ids.") var ids: [String] = []
            @Flag(help: "Rescan every quarantined transfer.") var all = false

            func validate() throws {
                if self.ids.isEmpty == !self.all {
                    throw ValidationError("Name transfer ids to rescan, or give --all (not both).")
                }
            }

            func run() async throws {
                let (admin, configuration, logger) = try await self.options.open()
                let ids =
                    self.all
                    ? try await admin.transfers(.init(states: [.quarantined], limit: Int.max)).map(\.record.id) : self.ids
                let inspector = try await Inspector.start(configuration: configuration, logger: logger)
                let interrupted = Interruption()
                let progress = ProgressReporter(total: ids.count)
                var lines: [RescanLine] = []
                var failures = 0
                for (index, id) in ids.enumerated() {
                    if interrupted.requested { break }
                    progress.update(done: index, current: id)
                    do {
                        let outcome = try await admin.rescan(id: id, inspector: inspector)
                        lines.append(RescanLine(outcome, state: .quarantined))
                        progress.finishedItem("\(id): \(outcome.previous) -> \(outcome.current)")
                    } catch {
                        failures += 1
                        progress.finishedItem("\(id): \(error)")
                    }
                }
                progress.update(done: lines.count + failures, current: nil)
                progress.end()
                try? await inspector.shutdown()
                if self.options.json {
                    try self.options.printJSON(lines)
                } else if !lines.isEmpty {
                    print(
                        "rescanned \(lines.count) of \(ids.count); \(lines.filter { $0.verdict == "clean" }.count) now clean (release them to serve them)"
                    )
                }
                if interrupted.requested {
                    FileHandle.standardError.write(
                        Data("airlock: interrupted after \(lines.count + failures) of \(ids.count); the rest were not rescanned\n".utf8)
                    )
                    throw ExitCode(130)
                }
                if failures > 0 { throw ExitCode.operationalError }
            }
        }

        struct Export: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Decrypt a quarantined transfer to a new file for analysis.",
                discussion: """
                    FILE must not exist: an existing file or a symbolic link is refused (exit 2), never overwritten or followed. \
                    It is created with mode 0600 whatever the umask. The export is recorded in the audit log before any \
                    decrypted byte is written.
                    """
            )

            @OptionGroup var options: AdminOptions
            @Argument(help: "The transfer id.") var id: String
            @Option(help: ArgumentHelp("A new file to write the decrypted bytes to (mode 0600).", valueName: "FILE")) var to: String
            @Flag(help: "Confirm that you want possibly malicious bytes decrypted on this host (it never overwrites a file).")
            var force = false

            func validate() throws {
                guard self.force else {
                    throw ValidationError("Exporting writes possibly malicious bytes in the clear: confirm with --force.")
                }
            }

            func run() async throws {
                let (admin, _, _) = try await self.options.open()
                try await admin.export(id: self.id, to: self.to)
                if !self.options.json {
                    print("decrypted \(self.id) to \(Output.escaped(self.to)) (mode 0600; the export is in the audit log)")
                } else {
                    try self.options.printJSON(["id": self.id, "to": self.to])
                }
            }
        }
    }
}

/// One rescan result for JSON output.
struct RescanLine: Encodable {
    var id: String
    var previousVerdict: String
    var verdict: String
    var signature: String?
    var reason: String?
    var signatureVersion: String
    var state: String

    init(_ outcome: Administration.RescanOutcome, state: TransferState) {
        self.id = outcome.id
        self.previousVerdict = outcome.previous.kind.rawValue
        self.verdict = outcome.current.kind.rawValue
        self.signature = outcome.current.signature
        self.reason = outcome.current.reason
        self.signatureVersion = outcome.signatureVersion
        self.state = state.rawValue
    }
}

/// Turns Ctrl-C (SIGINT) and SIGTERM into a request to stop after the current item, instead of killing the process
/// mid-write.
final class Interruption: @unchecked Sendable {
    // `sources` is set once in init and never touched again; the flag is behind a Mutex.
    private final class Flag: Sendable {
        let value = Mutex(false)
    }
    private let flag = Flag()
    private let sources: [any DispatchSourceSignal]

    init() {
        let flag = self.flag
        self.sources = [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                flag.value.withLock { $0 = true }
                FileHandle.standardError.write(Data("\nairlock: stopping after the current file…\n".utf8))
            }
            source.resume()
            return source
        }
    }

    var requested: Bool { self.flag.value.withLock { $0 } }
}

/// A progress bar on a terminal, plain lines otherwise (both on standard error).
final class ProgressReporter {
    /// Items in all; may be learnt as the work goes.
    var total: Int
    let isTerminal = isatty(STDERR_FILENO) == 1

    init(total: Int) {
        self.total = total
    }

    func update(done: Int, current: String?) {
        guard self.isTerminal, self.total > 0 else { return }
        let width = 30
        let filled = width * done / self.total
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        let label = current.map { " \($0)" } ?? ""
        FileHandle.standardError.write(Data("\r\u{1B}[K[\(bar)] \(done)/\(self.total)\(label)".utf8))
    }

    func finishedItem(_ line: String) {
        if self.isTerminal {
            FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        }
        FileHandle.standardError.write(Data("\(line)\n".utf8))
    }

    func end() {
        if self.isTerminal {
            FileHandle.standardError.write(Data("\n".utf8))
        }
    }
}
