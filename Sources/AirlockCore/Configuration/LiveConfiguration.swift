import Synchronization

/// The configuration a running broker uses now, with what is derived from it (the download token keys); a
/// configuration reload replaces it whole, and each request reads it once.
public final class LiveConfiguration: Sendable {
    /// One state of the configuration.
    public final class Settings: Sendable {
        /// The configuration.
        public let configuration: AirlockConfiguration
        /// Download tokens made with its `tokens` keys.
        public let tokens: DownloadTokens

        init(_ configuration: AirlockConfiguration, tokens: DownloadTokens? = nil) {
            self.configuration = configuration
            self.tokens = tokens ?? DownloadTokens(configuration.tokens)
        }
    }

    private let state: Mutex<Settings>

    /// Starts with `configuration` (and `tokens`, when already made from it).
    public init(_ configuration: AirlockConfiguration, tokens: DownloadTokens? = nil) {
        self.state = Mutex(Settings(configuration, tokens: tokens))
    }

    /// The settings in force now.
    public var current: Settings {
        self.state.withLock { $0 }
    }

    /// Puts `configuration` in force and returns the settings it replaces.
    @discardableResult
    public func replace(with configuration: AirlockConfiguration) -> Settings {
        let next = Settings(configuration)
        return self.state.withLock { current in
            let previous = current
            current = next
            return previous
        }
    }
}
