import AirlockCore
import Foundation
import Logging
import NIOPosix
import ServiceLifecycle
import UnixSignals

/// Keeps a running server current: reloads the configuration file and the signatures on SIGHUP (which
/// `airlock reload` sends), looks at the signature files every `scanner.reloadCheckSeconds` as clamd's SelfCheck
/// does, and keeps `var/run/<node>/airlock.pid` while it runs so that `airlock reload` can find the server.
struct ReloadService: Service {
    let broker: Broker
    /// Reads the configuration again (the same file and environment as at start); nil: signatures only.
    let configurationSource: (@Sendable () throws -> AirlockConfiguration)?
    /// The TLS certificate, read again at each configuration reload.
    let certificate: LiveCertificate?
    let logger: Logger

    /// `var/run/<node>/airlock.pid`.
    static func pidFilePath(runDirectory: String) -> String {
        (runDirectory as NSString).appendingPathComponent("airlock.pid")
    }

    func run() async throws {
        // Trapped before the pid file announces us: SIGHUP's default action would end the process.
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        let pidFile = Self.pidFilePath(runDirectory: self.broker.store.runDirectory)
        let pid = "\(getpid())\n"
        do {
            try await self.broker.threadPool.runIfActive {
                try FileStore.writePrivately(Data(pid.utf8), to: pidFile)
            }
        } catch {
            self.logger.error(
                "cannot write the pid file: `airlock reload` will not find this server",
                metadata: ["path": "\(pidFile)", "error": "\(error)"]
            )
        }
        defer {
            // Only our own: a newer server on the same data directory may have replaced it.
            if (try? String(contentsOfFile: pidFile, encoding: .utf8)) == pid {
                unlink(pidFile)
            }
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await _ in hangups {
                    await self.reload(trigger: "SIGHUP", rereadConfiguration: true)
                }
            }
            group.addTask {
                await self.checkPeriodically()
            }
            try? await gracefulShutdown()
            group.cancelAll()
        }
    }

    /// Looks at the signature files every `scanner.reloadCheckSeconds` (read again each time: a reload may change
    /// it); with 0, only on request.
    private func checkPeriodically() async {
        while !Task.isCancelled {
            let interval = self.broker.configuration.scanner.reloadCheckSeconds
            do {
                try await Task.sleep(for: .seconds(interval > 0 ? interval : 60))
            } catch {
                return
            }
            if interval > 0 {
                await self.reload(trigger: "check", rereadConfiguration: false)
            }
        }
    }

    /// One reload: the configuration file (when asked and possible), the certificate, then the signatures.
    func reload(trigger: String, rereadConfiguration: Bool) async {
        var next: Result<AirlockConfiguration, any Error>?
        if rereadConfiguration, let source = self.configurationSource {
            do {
                next = .success(try await self.broker.threadPool.runIfActive { try source() })
            } catch {
                next = .failure(error)
            }
        }
        if case .success(let configuration) = next, let certificate = self.certificate,
            configuration.http.tls.certificateFile != nil
        {
            let tls = configuration.http.tls
            let failure = (try? await self.broker.threadPool.runIfActive { certificate.reread(tls).map { "\($0)" } }) ?? nil
            if let failure {
                self.logger.error(
                    "cannot read the TLS certificate or key again; the previous certificate keeps serving",
                    metadata: ["certificateFile": "\(tls.certificateFile ?? "")", "error": "\(failure)"]
                )
            }
        }
        _ = await self.broker.reload(next, trigger: trigger)
    }
}
