/// An error reported by libmagic, with libmagic's own message.
public struct MagicError: Error, Sendable, CustomStringConvertible {
    /// The operation that failed, for example `magic_load`.
    public let operation: String
    /// libmagic's message (`magic_error`), or a description of the failure.
    public let message: String

    public var description: String {
        "\(self.operation) failed: \(self.message)"
    }
}
