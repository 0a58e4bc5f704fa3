import AirlockCore
import Synchronization

/// A value made from the configuration in force, made again after a reload replaced it: each request asks for
/// it, and the first after a reload pays for making it (key digests, HMAC keys).
final class Derived<Value: Sendable>: Sendable {
    private let live: LiveConfiguration
    private let make: @Sendable (AirlockConfiguration) -> Value
    private let cache: Mutex<(settings: LiveConfiguration.Settings, value: Value)?>

    init(_ live: LiveConfiguration, _ make: @escaping @Sendable (AirlockConfiguration) -> Value) {
        self.live = live
        self.make = make
        self.cache = Mutex(nil)
    }

    /// The value for the configuration in force now.
    var current: Value {
        let settings = self.live.current
        if let cached = self.cache.withLock({ $0 }), cached.settings === settings {
            return cached.value
        }
        let value = self.make(settings.configuration)
        self.cache.withLock { $0 = (settings, value) }
        return value
    }
}
