import Foundation

extension AirlockConfiguration.Policy {
    /// `policy.opaqueContent` (`serve` or `quarantine`, default `serve`): what becomes of a clean upload whose content
    /// is opaque (``ContentClass/opaque``: untyped and statistically random, what end-to-end encrypted files such as
    /// OMEMO's look like), which no scanner can see into.
    public enum OpaqueContent: String, Sendable, Equatable, Codable, CaseIterable {
        /// Served like any clean file, and recorded as opaque: encrypted file transfer keeps working.
        case serve
        /// Quarantined, blocked with the reason "encrypted content cannot be inspected": for deployments that must
        /// inspect everything they deliver.
        case quarantine
    }
}

extension AirlockConfiguration.Policy.OpaqueContent {
    init(_ reader: inout ConfigurationReader) throws {
        let key = "policy.opaqueContent"
        let value = try reader.string(key, default: Self.serve.rawValue)
        guard let policy = Self(rawValue: value) else {
            throw ConfigurationError(
                key: key,
                message: "must be \"serve\" (deliver encrypted uploads, recorded as opaque) or \"quarantine\" (hold them), got \"\(value)\""
            )
        }
        self = policy
    }
}
