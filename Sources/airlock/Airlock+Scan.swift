import AirlockCore
import ArgumentParser
import Foundation
import LibMagic
import Logging

extension Airlock {
    /// `airlock scan PATH…`: inspect files without storing anything, printing clamscan-style lines.
    struct Scan: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Inspect files or directories with the configured signatures and policy.",
            discussion: """
                Prints one line per file as clamscan does: `PATH: OK`, `PATH: <signature> FOUND`, \
                `PATH: <reason> BLOCKED`, `PATH: <reason> UNSCANNABLE`. Exit code 0 when every file is clean, \
                1 when any is not, 2 on errors.
                """
        )

        @OptionGroup var options: CommonOptions

        @Flag(name: .long, help: "Print a JSON array of results instead of lines.")
        var json = false

        @Flag(name: [.short, .long], help: "Add the detected type to each line.")
        var verbose = false

        @Flag(name: .long, help: "Do not print the summary after the lines.")
        var noSummary = false

        @Argument(help: ArgumentHelp("Files or directories (scanned recursively).", valueName: "PATH"))
        var paths: [String]

        func validate() throws {
            if self.paths.isEmpty {
                throw ValidationError("Name at least one file or directory to scan.")
            }
        }

        func run() async throws {
            let logger = try self.options.bootstrapLogging(label: "airlock.scan", defaultLevel: .warning)
            let configuration = try self.options.loadConfiguration()
            let inspector = try await Inspector.start(configuration: configuration, logger: logger)
            let started = ContinuousClock.now

            let targets = Self.expand(self.paths)
            // libmagic's description costs as much again as the type: only when it is printed.
            let describe = self.verbose || self.json
            let width = max(1, configuration.scanner.effectiveWorkers * 2)
            var results: [ScanLine] = []
            var pending: [Int: ScanLine] = [:]
            var nextToPrint = 0
            await withTaskGroup(of: (Int, ScanLine).self) { group in
                var nextToStart = 0
                func startNext() {
                    guard nextToStart < targets.count else { return }
                    let index = nextToStart
                    let target = targets[index]
                    nextToStart += 1
                    group.addTask {
                        switch target {
                        case .file(let path):
                            return (index, ScanLine(path: path, report: await inspector.inspect(fileAt: path, describe: describe)))
                        case .missing(let path, let reason):
                            return (index, ScanLine(path: path, error: reason))
                        }
                    }
                }
                for _ in 0..<width { startNext() }
                for await (index, line) in group {
                    pending[index] = line
                    // Print in input order as soon as the next line is ready.
                    while let ready = pending.removeValue(forKey: nextToPrint) {
                        if !self.json {
                            print(ready.text(verbose: self.verbose))
                        }
                        results.append(ready)
                        nextToPrint += 1
                    }
                    startNext()
                }
            }
            try? await inspector.shutdown()

            if self.json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(results), as: UTF8.self))
            } else if !self.noSummary {
                let elapsed = ContinuousClock.now - started
                let notClean = results.filter { $0.verdict != nil && $0.verdict != Verdict.Kind.clean.rawValue }.count
                print(
                    """

                    ----------- SCAN SUMMARY -----------
                    Known viruses: \(inspector.signatures.signatureCount)
                    Signature version: \(inspector.signatures.version)
                    Scanned files: \(results.filter { $0.verdict != nil }.count)
                    Not clean: \(notClean)
                    Errors: \(results.filter { $0.error != nil }.count)
                    Time: \(elapsed.formatted(.units(allowed: [.seconds, .milliseconds], width: .narrow)))
                    """
                )
            }

            if results.contains(where: { $0.error != nil }) {
                throw ExitCode.operationalError
            }
            if results.contains(where: { $0.verdict != Verdict.Kind.clean.rawValue }) {
                throw ExitCode.found
            }
        }

        enum Target {
            case file(String)
            case missing(String, reason: String)
        }

        /// Expands directories recursively (without following directory symlinks), in sorted order.
        static func expand(_ paths: [String]) -> [Target] {
            var targets: [Target] = []
            for path in paths {
                var isDirectory: ObjCBool = false
                guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                    targets.append(.missing(path, reason: "No such file or directory"))
                    continue
                }
                guard isDirectory.boolValue else {
                    targets.append(.file(path))
                    continue
                }
                guard let enumerator = FileManager.default.enumerator(atPath: path) else {
                    targets.append(.missing(path, reason: "Cannot list the directory"))
                    continue
                }
                var files: [String] = []
                while let relative = enumerator.nextObject() as? String {
                    if enumerator.fileAttributes?[.type] as? FileAttributeType == .typeRegular {
                        files.append((path as NSString).appendingPathComponent(relative))
                    }
                }
                targets += files.sorted().map { .file($0) }
            }
            return targets
        }
    }
}

/// One result of `airlock scan`, as a line or as JSON.
struct ScanLine: Encodable {
    var path: String
    var verdict: String?
    var signature: String?
    var reason: String?
    var size: Int64?
    var sha256: String?
    var detectedType: String?
    var typeDescription: String?
    var error: String?
    private var line: String

    init(path: String, report: InspectionReport) {
        self.path = path
        self.verdict = report.verdict.kind.rawValue
        self.signature = report.verdict.signature
        self.reason = report.verdict.reason
        self.size = report.size
        self.sha256 = report.sha256
        self.detectedType = report.detectedType?.mimeType
        self.typeDescription = report.detectedType?.description
        self.line = "\(path): \(report.verdict)"
    }

    init(path: String, error: String) {
        self.path = path
        self.error = error
        self.line = "\(path): \(error) ERROR"
    }

    func text(verbose: Bool) -> String {
        guard verbose, let detectedType else { return self.line }
        return "\(self.line) (\(detectedType): \(self.typeDescription ?? ""))"
    }

    enum CodingKeys: String, CodingKey {
        case path, verdict, signature, reason, size, sha256, detectedType, typeDescription, error
    }
}
