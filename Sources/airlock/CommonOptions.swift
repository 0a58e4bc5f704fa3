import AirlockCore
import ArgumentParser
import Foundation
import Logging

/// Options every subcommand takes: the configuration file and the log level.
struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Read the configuration from FILE instead of Config/airlock.json.", valueName: "FILE"))
    var config: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error or critical (AIRLOCK_LOG_LEVEL).")
    var logLevel: String?

    /// Loads the configuration with the environment overrides.
    func loadConfiguration() throws -> AirlockConfiguration {
        try AirlockConfiguration.load(file: self.config)
    }

    /// Sends logs to standard error at the chosen level and returns the command's logger.
    func bootstrapLogging(label: String, defaultLevel: Logger.Level) throws -> Logger {
        let name = self.logLevel ?? ProcessInfo.processInfo.environment["AIRLOCK_LOG_LEVEL"]
        let level: Logger.Level
        if let name {
            guard let parsed = Logger.Level(rawValue: name.lowercased()) else {
                throw ValidationError("Unknown log level \"\(name)\"; use one of trace, debug, info, notice, warning, error, critical.")
            }
            level = parsed
        } else {
            level = defaultLevel
        }
        LoggingSystem.bootstrap { label in
            var handler = DeferredMetadataLogHandler(StreamLogHandler.standardError(label: label))
            handler.logLevel = level
            return handler
        }
        var logger = Logger(label: label)
        logger.logLevel = level
        return logger
    }
}
