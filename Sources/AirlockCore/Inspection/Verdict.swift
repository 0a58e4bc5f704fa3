/// The outcome of inspecting one file. Only ``clean`` is ever served; everything else is quarantined.
public enum Verdict: Sendable, Hashable, CustomStringConvertible {
    /// Every byte was inspected and nothing matched.
    case clean
    /// A signature matched.
    case infected(signature: String)
    /// Policy refuses the file's type (blocked type, not allowed, or declared/detected mismatch).
    case blocked(reason: String)
    /// The file could not be fully inspected (limits, encryption, scanner error, timeout): fail closed.
    case unscannable(reason: String)

    /// The verdict's kind, as stored in the ledger and the API.
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case clean, infected, blocked, unscannable
    }

    /// This verdict's kind.
    public var kind: Kind {
        switch self {
        case .clean: .clean
        case .infected: .infected
        case .blocked: .blocked
        case .unscannable: .unscannable
        }
    }

    /// The signature name for `infected`.
    public var signature: String? {
        if case .infected(let signature) = self { return signature }
        return nil
    }

    /// The reason for `blocked` and `unscannable`.
    public var reason: String? {
        switch self {
        case .blocked(let reason), .unscannable(let reason): reason
        case .clean, .infected: nil
        }
    }

    /// Whether the file may be served.
    public var isClean: Bool { self == .clean }

    /// The verdict as `airlock scan` prints it after the path: `OK`, `<signature> FOUND`, `<reason> BLOCKED`,
    /// `<reason> UNSCANNABLE`.
    public var description: String {
        switch self {
        case .clean: "OK"
        case .infected(let signature): "\(signature) FOUND"
        case .blocked(let reason): "\(reason) BLOCKED"
        case .unscannable(let reason): "\(reason) UNSCANNABLE"
        }
    }
}
