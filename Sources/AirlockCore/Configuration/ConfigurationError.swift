/// A configuration that cannot be used; the message names the key and where its value came from.
public struct ConfigurationError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The dotted key path at fault, for example `scanner.maxFileSize`, or nil for the file as a whole.
    public let key: String?
    /// What is wrong and what to do.
    public let message: String

    /// Creates an error about `key`.
    public init(key: String?, message: String) {
        self.key = key
        self.message = message
    }

    public var description: String {
        if let key {
            return "invalid configuration: \(key): \(self.message)"
        }
        return "invalid configuration: \(self.message)"
    }
}
