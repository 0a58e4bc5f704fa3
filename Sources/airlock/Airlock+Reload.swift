import AirlockCore
import ArgumentParser
import Foundation
import NIOSSL

#if canImport(Glibc)
    import Glibc
#endif

extension Airlock {
    /// `airlock reload`: asks the running server to reload its configuration and signatures, and reports how it went.
    struct Reload: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Reload the running server's configuration and signatures, without a restart.",
            discussion: """
                Finds the server of this configuration's data directory and node by var/run/<node>/airlock.pid, sends it \
                SIGHUP and waits for its report in var/run/<node>/reload-status.json. Exit status 0 when everything \
                was applied, 2 when the configuration file was invalid (nothing of it changed), the signatures failed \
                to load (the previous ones keep serving, except in scanner.reloadMode blocking) or no server answered.
                """
        )

        @OptionGroup var options: CommonOptions

        @Option(help: "Seconds to wait for the server's report (compiling a large signature database takes a while).")
        var timeout: Int = 600

        func run() async throws {
            let configuration: AirlockConfiguration
            do {
                configuration = try self.options.loadConfiguration()
            } catch {
                throw ValidationError(
                    "\(error)\nThe server was not asked to reload: fix the file (airlock config check) and run airlock reload again."
                )
            }
            let store = FileStore(configuration.storage, node: configuration.node.id)
            let pidFile = (store.runDirectory as NSString).appendingPathComponent("airlock.pid")
            let statusFile = (store.runDirectory as NSString).appendingPathComponent("reload-status.json")
            guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
                let pid = Int32(text.trimmingCharacters(in: .whitespacesAndNewlines))
            else {
                throw ValidationError(
                    "no running server found: \(pidFile) is missing. Start it with `airlock serve` (same --config), or check storage.dataDirectory and node.id"
                )
            }
            // EPERM: running, as another user (the signal below then says what to do).
            guard kill(pid, 0) == 0 || errno == EPERM, Self.isAirlock(pid) else {
                throw ValidationError("the server recorded in \(pidFile) (pid \(pid)) is not running: start it with `airlock serve`")
            }
            let before = Self.status(at: statusFile)
            guard kill(pid, SIGHUP) == 0 else {
                throw ValidationError(
                    "cannot signal the server (pid \(pid)): \(String(cString: strerror(errno))); run this as the user the server runs as"
                )
            }
            print("asked the server (pid \(pid)) to reload; waiting for its report…")
            let started = ContinuousClock.now
            var lastNotice = started
            while true {
                if let status = Self.status(at: statusFile), status.pid == pid, status.trigger == "SIGHUP",
                    status.sequence > (before?.pid == pid ? before!.sequence : 0)
                {
                    Self.report(status)
                    if status.status != "ok" { throw ExitCode.operationalError }
                    return
                }
                let now = ContinuousClock.now
                guard started.duration(to: now) < .seconds(self.timeout) else {
                    throw ValidationError(
                        "the server (pid \(pid)) did not report within \(self.timeout) s; see its log, or wait longer with --timeout"
                    )
                }
                guard kill(pid, 0) == 0 || errno == EPERM else {
                    throw ValidationError("the server (pid \(pid)) stopped while reloading; see its log")
                }
                if lastNotice.duration(to: now) >= .seconds(10) {
                    print("still reloading (\(Int(started.duration(to: now).seconds)) s; compiling signatures can take a minute)…")
                    lastNotice = now
                }
                try await Task.sleep(for: .milliseconds(100))
            }
        }

        /// Whether `pid` runs the airlock executable (not another process that reused a stale pid).
        static func isAirlock(_ pid: Int32) -> Bool {
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/exe") else {
                // Another user's process: /proc hides its executable; the signal will tell.
                return true
            }
            return (target as NSString).lastPathComponent.hasPrefix("airlock")
        }

        static func status(at path: String) -> ReloadStatus? {
            guard let data = FileManager.default.contents(atPath: path) else { return nil }
            return try? JSONDecoder().decode(ReloadStatus.self, from: data)
        }

        static func report(_ status: ReloadStatus) {
            if let error = status.configurationError {
                Swift.print("configuration: NOT reloaded, nothing of it changed: \(error)")
            } else if status.configurationChanged.isEmpty {
                Swift.print("configuration: unchanged")
            } else {
                Swift.print("configuration: reloaded (\(status.configurationChanged.joined(separator: ", ")))")
            }
            if !status.configurationNeedsRestart.isEmpty {
                Swift.print(
                    "configuration: changed but kept until a restart: \(status.configurationNeedsRestart.joined(separator: ", "))"
                )
            }
            switch status.signatures {
            case "reloaded":
                Swift.print(
                    "signatures: reloaded in \(String(format: "%.1f", status.reloadSeconds)) s: version \(status.signatureVersion) "
                        + "(\(status.signatureCount) signatures; was \(status.previousSignatureVersion ?? "?"))"
                )
            case "failed" where status.serving == false:
                Swift.print(
                    "signatures: reload FAILED and no signatures serve (scanner.reloadMode blocking): uploads are answered "
                        + "unscannable until the files load; fix them and run airlock reload again: \(status.signatureError ?? "?")"
                )
            case "failed":
                Swift.print(
                    "signatures: reload FAILED, version \(status.signatureVersion) keeps serving: \(status.signatureError ?? "?")"
                )
            default:
                Swift.print("signatures: unchanged, version \(status.signatureVersion) (\(status.signatureCount) signatures)")
            }
        }
    }

    /// `airlock config`: configuration tools.
    struct Config: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Configuration tools.",
            subcommands: [Check.self]
        )

        /// `airlock config check`: validates a configuration file without starting anything.
        struct Check: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Validate a configuration file (with the AIRLOCK_* environment) without starting anything.",
                discussion: """
                    Checks every key, the secret files it names, the TLS certificate and key, and that a signature \
                    directory holds signature files. Exit status 0 when valid, 2 with the key at fault otherwise.
                    """
            )

            @OptionGroup var options: CommonOptions

            func run() throws {
                let configuration = try self.options.loadConfiguration()
                if let certificateFile = configuration.http.tls.certificateFile, let keyFile = configuration.http.tls.privateKeyFile {
                    do {
                        _ = try NIOSSLCertificate.fromPEMFile(certificateFile)
                    } catch {
                        throw ConfigurationError(
                            key: "http.tls.certificateFile",
                            message: "\(certificateFile) is not a readable PEM certificate: \(error)"
                        )
                    }
                    do {
                        _ = try NIOSSLPrivateKey(file: keyFile, format: .pem)
                    } catch {
                        throw ConfigurationError(key: "http.tls.privateKeyFile", message: "\(keyFile) is not a readable PEM private key: \(error)")
                    }
                }
                let withSignatures = configuration.scanner.signatureDirectories.filter { directory in
                    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
                    return names.contains { !$0.hasPrefix(".") }
                }
                guard !withSignatures.isEmpty else {
                    throw ConfigurationError(
                        key: "scanner.signatureDirectories",
                        message: "none of \(configuration.scanner.signatureDirectories.joined(separator: ", ")) holds signature files"
                    )
                }
                let source = self.options.config ?? "Config/airlock.json (or the built-in defaults)"
                print("configuration OK: \(source)")
                print(
                    "  listener: \(configuration.http.host):\(configuration.http.port)\(configuration.http.tls.certificateFile == nil ? "" : " (TLS)")"
                )
                let ledger = if case .postgresql = configuration.ledger.backend { "PostgreSQL" } else { "SQLite" }
                print("  ledger: \(ledger); data: \(configuration.storage.dataDirectory)")
                print("  signatures from: \(withSignatures.joined(separator: ", "))")
                print("  IM servers: \(configuration.servers.keys.sorted().joined(separator: ", "))")
                let development = configuration.developmentSecretKeys
                if !development.isEmpty {
                    print("  warning: development secrets in use (loopback only): \(development.joined(separator: ", "))")
                }
            }
        }
    }
}
