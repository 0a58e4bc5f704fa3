import AirlockCore
import ArgumentParser
import Foundation
import Logging

/// Options of the admin commands: configuration, log level, JSON output.
struct AdminOptions: ParsableArguments {
    @OptionGroup var common: CommonOptions

    @Flag(name: .long, help: "Print JSON for scripts instead of aligned columns.")
    var json = false

    /// Opens the ledger and store the configuration names (never creating them).
    func open(now: Date? = nil) async throws -> (Administration, AirlockConfiguration, Logger) {
        let logger = try self.common.bootstrapLogging(label: "airlock.admin", defaultLevel: .warning)
        let configuration = try self.common.loadConfiguration()
        let clock: @Sendable () -> Date = if let now { { now } } else { { Date() } }
        return (try await Administration.open(configuration: configuration, now: clock), configuration, logger)
    }

    /// Prints `value` as JSON.
    func printJSON(_ value: some Encodable) throws {
        print(String(decoding: try TransferDocument.encoder.encode(value), as: UTF8.self))
    }
}

/// Human output: aligned columns, readable sizes, local times. Every cell and field is printed through
/// ``escaped(_:)``: what senders chose (filenames, addresses, reasons) never reaches the terminal raw.
enum Output {
    /// `text` with control and format characters written as `\u{202E}`: no bidirectional override, zero-width
    /// character or terminal escape sequence takes effect on the admin's screen.
    static func escaped(_ text: String) -> String {
        Filename.escapingInvisibles(text)
    }

    /// Prints rows under a header with each column padded to its widest cell.
    static func table(_ header: [String], _ rawRows: [[String]]) {
        let rows = rawRows.map { $0.map(self.escaped) }
        let widths = header.indices.map { column in
            ([header] + rows).map { $0[column].count }.max() ?? 0
        }
        for row in [header] + rows {
            let cells = row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }
            print(cells.joined(separator: "  "))
        }
    }

    /// `1.5 MiB`, `812 B`.
    static func size(_ bytes: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(bytes)
        var unit = 0
        while value >= 1024, unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
    }

    /// A local time, `2026-11-22 14:03:09`.
    static func time(_ date: Date) -> String {
        self.formatter.string(from: date)
    }

    private static let formatter: DateFormatter = {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = .current
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return formatter
    }()

    /// The verdict with its signature or reason.
    static func verdict(_ record: TransferRecord) -> String {
        switch record.fullVerdict {
        case .clean: "clean"
        case .infected(let signature): "infected: \(signature)"
        case .blocked(let reason): "blocked: \(reason)"
        case .unscannable(let reason): "unscannable: \(reason)"
        }
    }

    /// Prints one transfer's fields, one per line.
    static func describe(_ summary: Administration.TransferSummary) {
        let record = summary.record
        let fields: [(String, String)] = [
            ("id", record.id), ("state", record.state.rawValue), ("verdict", self.verdict(record)),
            ("created", self.time(record.createdAt)), ("server", record.server), ("sender", record.sender),
            ("recipients", summary.recipients.joined(separator: ", ")), ("filename", record.filename),
            ("original filename", record.originalFilename), ("size", "\(self.size(record.size)) (\(record.size) bytes)"),
            ("sha256", record.sha256), ("declared type", record.declaredType ?? "-"),
            ("detected type", record.detectedType.map { type in record.typeDescription.map { "\(type) (\($0))" } ?? type } ?? "-"),
            ("content class", record.contentClass == .opaque ? "opaque (not inspectable: untyped random bytes, e.g. encrypted)" : "inspected"),
            ("signature version", record.signatureVersion),
        ] + (record.recalledAt.map { [("recalled", "\(self.time($0)) (delivered clean, found unclean by later signatures)")] } ?? [])
        let width = fields.map(\.0.count).max() ?? 0
        for (name, value) in fields {
            print("\(name.padding(toLength: width, withPad: " ", startingAt: 0))  \(self.escaped(value))")
        }
    }

    /// Prints audit entries as a table.
    static func audit(_ entries: [AuditEntry]) {
        self.table(
            ["#", "TIME", "ACTOR", "ACTION", "TRANSFER", "DETAILS"],
            entries.map { entry in
                [String(entry.id ?? 0), self.time(entry.at), entry.actor, entry.action, entry.transferId ?? "-", entry.details]
            }
        )
    }
}

extension Administration.TransferSummary {
    var document: TransferDocument { TransferDocument(self.record, recipients: self.recipients) }
}

/// A reason that must be given for actions recorded in the audit log.
func requireReason(_ reason: String?) throws {
    guard let reason, !reason.trimmingCharacters(in: .whitespaces).isEmpty else {
        throw ValidationError("A reason is required for the audit log: add --reason \"why you do this\".")
    }
}
