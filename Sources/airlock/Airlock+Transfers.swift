import AirlockCore
public import ArgumentParser
import Foundation

extension Airlock {
    /// `airlock transfers …`: the ledger.
    struct Transfers: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List and inspect transfers in the ledger.",
            subcommands: [List.self, Show.self]
        )

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List transfers, newest first.")

            @OptionGroup var options: AdminOptions
            @Option(help: "Only transfers from this sender.") var sender: String?
            @Option(help: "Only transfers to this recipient.") var recipient: String?
            @Option(help: ArgumentHelp("Only transfers created since this date (YYYY-MM-DD or ISO 8601).", valueName: "DATE")) var since: String?
            @Option(help: "Only this verdict: clean, infected, blocked or unscannable.") var verdict: Verdict.Kind?
            @Option(help: "Only this state: stored, quarantined, released, deleted or purged.") var state: TransferState?
            @Option(help: "At most this many.") var limit = 100

            func validate() throws {
                guard self.limit > 0 else { throw ValidationError("--limit must be at least 1.") }
                if let since, parseDate(since) == nil {
                    throw ValidationError("--since must be a date like 2026-11-22 or 2026-11-22T14:00:00Z, got \"\(since)\".")
                }
            }

            func run() async throws {
                let (admin, _, _) = try await self.options.open()
                let filter = Administration.TransferFilter(
                    sender: self.sender,
                    recipient: self.recipient,
                    since: self.since.flatMap(parseDate),
                    verdict: self.verdict,
                    states: self.state.map { [$0] },
                    limit: self.limit
                )
                let transfers = try await admin.transfers(filter)
                if self.options.json {
                    try self.options.printJSON(transfers.map(\.document))
                    return
                }
                Output.table(
                    ["ID", "CREATED", "SENDER", "RECIPIENTS", "FILENAME", "SIZE", "STATE", "CLASS", "VERDICT"],
                    transfers.map { summary in
                        let record = summary.record
                        return [
                            record.id, Output.time(record.createdAt), record.sender, summary.recipients.joined(separator: ","),
                            record.filename, Output.size(record.size), record.state.rawValue, record.contentClass.rawValue,
                            Output.verdict(record),
                        ]
                    }
                )
            }
        }

        struct Show: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Show one transfer with its audit history and downloads.")

            @OptionGroup var options: AdminOptions
            @Argument(help: "The transfer id.") var id: String

            func run() async throws {
                let (admin, _, _) = try await self.options.open()
                try await showTransfer(admin.detail(id: self.id), options: self.options)
            }
        }
    }
}

/// Prints a transfer, its audit history and downloads.
func showTransfer(_ detail: Administration.TransferDetail, options: AdminOptions) throws {
    if options.json {
        struct Shown: Encodable {
            var transfer: TransferDocument
            var audit: [AuditEntry]
            var downloads: [DownloadRecord]
        }
        try options.printJSON(Shown(transfer: detail.summary.document, audit: detail.audit, downloads: detail.downloads))
        return
    }
    Output.describe(detail.summary)
    print("\nAudit history:")
    Output.audit(detail.audit)
    print("\nDownloads:")
    if detail.downloads.isEmpty {
        print("none")
    } else {
        Output.table(
            ["TIME", "RECIPIENT", "ADDRESS", "BYTES", "STATUS"],
            detail.downloads.map { [Output.time($0.at), $0.recipient ?? "-", $0.remoteAddress ?? "-", String($0.bytes), String($0.status)] }
        )
    }
}

/// Parses `YYYY-MM-DD` (local midnight) or ISO 8601.
func parseDate(_ text: String) -> Date? {
    if let date = ISO8601DateFormatter().date(from: text) { return date }
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = .current
    formatter.dateFormat = "yyyy-MM-dd"
    return formatter.date(from: text)
}

extension Verdict.Kind: ExpressibleByArgument {}
extension TransferState: ExpressibleByArgument {}
