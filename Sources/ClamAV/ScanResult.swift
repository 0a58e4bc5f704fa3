/// What one libclamav scan found. Errors (unreadable input, timeouts, engine failures) are thrown, not returned.
public enum ScanResult: Sendable, Hashable {
    /// Every byte was scanned within the limits and nothing matched.
    case clean
    /// A signature matched; `signature` is its name as libclamav reports it.
    case virus(signature: String)
    /// A heuristic fired (`Heuristics.*`): encrypted, broken or over a limit. The content was not fully inspected.
    case heuristic(name: String)
    /// Airlock's own archive checks found content libclamav would skip silently (an encrypted or oversized member).
    case uninspectable(reason: String)

    /// Whether the scan found nothing and inspected everything.
    public var isClean: Bool { self == .clean }
}
