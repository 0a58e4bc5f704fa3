import AirlockCore
import AirlockServer
import ArgumentParser
import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import UnixSignals

extension Airlock {
    /// `airlock serve`: run the broker.
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run the broker's HTTP service.",
            discussion: "Stops gracefully on SIGTERM or SIGINT: in-flight requests finish, nothing half-written is kept."
        )

        @OptionGroup var options: CommonOptions

        func run() async throws {
            let logger = try self.options.bootstrapLogging(label: "airlock", defaultLevel: .info)
            let configuration = try self.options.loadConfiguration()
            Self.warnAboutDevelopmentSecrets(configuration, logger: logger)
            if !configuration.scanner.isolation.enabled {
                let banner = String(repeating: "!", count: 78)
                logger.warning(
                    """
                    \n\(banner)
                    SCANNER ISOLATION IS OFF (scanner.isolation.enabled = false): libclamav and libmagic parse every upload
                    inside this process, beside the token keys, the quarantine key and the ledger. A parser bug in either
                    can take over or crash the broker. Turn it off for debugging only.
                    \(banner)
                    """
                )
            }
            let file = self.options.config
            let app = try await buildApplication(
                configuration: configuration,
                logger: logger,
                configurationSource: { try AirlockConfiguration.load(file: file) }
            )
            var lifecycle = ServiceGroupConfiguration(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
            // In-flight requests get this long to finish; then they are cancelled and their staging files removed.
            lifecycle.maximumGracefulShutdownDuration = .seconds(30)
            lifecycle.maximumCancellationDuration = .seconds(10)
            try await ServiceGroup(configuration: lifecycle).run()
        }

        /// Development secrets are accepted on a loopback listener only (the configuration refuses them elsewhere);
        /// even there they are worth a warning.
        static func warnAboutDevelopmentSecrets(_ configuration: AirlockConfiguration, logger: Logger) {
            let inUse = configuration.developmentSecretKeys
            if !inUse.isEmpty {
                logger.warning(
                    "development secrets in use (accepted on a loopback address only): replace them before serving beyond this machine (openssl rand -base64 32)",
                    metadata: ["keys": "\(inUse.joined(separator: ", "))"]
                )
            }
        }
    }
}
