import AirlockCore
public import ArgumentParser
import Foundation

extension Airlock {
    /// `airlock quotas`: how much each uploader and server holds and uploaded today, against their quotas.
    struct Quotas: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List quota usage by uploader and server, highest first.",
            discussion: """
                STORED counts the transfers not yet deleted or purged (stored, released, quarantined), against \
                quotas.*.totalBytes and, for the global row, limits.maxStoredBytes; TODAY and FILES TODAY count the uploads \
                of the current UTC day, against quotas.*.dailyBytes and quotas.*.dailyFiles. Uploads of HMAC XEP-0363 URLs \
                that name no uploader count for the uploader "unknown".
                """
        )

        @OptionGroup var options: AdminOptions
        @Option(help: "Only this scope: uploader, server or global.") var scope: QuotaScope?
        @Option(help: "At most this many rows.") var limit = 100

        func validate() throws {
            guard self.limit > 0 else { throw ValidationError("--limit must be at least 1.") }
        }

        /// One row of `--json` output.
        struct Row: Encodable {
            var scope: String
            var subject: String
            var storedBytes: Int64
            var storedFiles: Int64
            var todayBytes: Int64?
            var todayFiles: Int64?
            /// The configured limits that apply (absent: unlimited).
            var limits: AirlockConfiguration.QuotaLimits
        }

        func run() async throws {
            let (admin, configuration, _) = try await self.options.open()
            let now = Date()
            let usage = try await admin.ledger.quotaUsage(nil, day: QuotaDay.of(now))
            await admin.close()
            let rows = usage.filter { self.scope == nil || $0.subject.scope == self.scope }.prefix(self.limit).map { usage in
                let subject = usage.subject
                let limits: AirlockConfiguration.QuotaLimits =
                    switch subject.scope {
                    case .uploader: configuration.quotas.perUploader ?? .init()
                    case .server: configuration.quotas.perServer ?? .init()
                    case .global: .init(totalBytes: configuration.limits.maxStoredBytes)
                    }
                let daily = subject.scope != .global
                return Row(
                    scope: subject.scope.rawValue,
                    subject: subject.name,
                    storedBytes: usage.storedBytes,
                    storedFiles: usage.storedFiles,
                    todayBytes: daily ? usage.dayBytes : nil,
                    todayFiles: daily ? usage.dayFiles : nil,
                    limits: limits
                )
            }
            let day = Self.utcDay(now)
            if self.options.json {
                struct Shown: Encodable {
                    var day: String
                    var usage: [Row]
                }
                try self.options.printJSON(Shown(day: day, usage: Array(rows)))
                return
            }
            print("Usage on \(day) (UTC); \"of\" names the configured limit.")
            Output.table(
                ["SCOPE", "SUBJECT", "STORED", "FILES", "TODAY", "FILES TODAY"],
                rows.map { row in
                    [
                        row.scope, row.subject.isEmpty ? "-" : row.subject,
                        Self.against(Output.size(row.storedBytes), row.limits.totalBytes.map(Output.size)), String(row.storedFiles),
                        row.todayBytes.map { Self.against(Output.size($0), row.limits.dailyBytes.map(Output.size)) } ?? "-",
                        row.todayFiles.map { Self.against(String($0), row.limits.dailyFiles.map(String.init)) } ?? "-",
                    ]
                }
            )
        }

        /// `1.0 MiB of 5.0 MiB`, or the amount alone without a limit.
        static func against(_ amount: String, _ limit: String?) -> String {
            limit.map { "\(amount) of \($0)" } ?? amount
        }

        /// `2026-11-22`: the UTC day the daily counts are for.
        static func utcDay(_ date: Date) -> String {
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "UTC")
            formatter.dateFormat = "yyyy-MM-dd"
            return formatter.string(from: date)
        }
    }
}

extension QuotaScope: ExpressibleByArgument {}
