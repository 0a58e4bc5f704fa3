/// Why the broker refused a request; the HTTP layer maps each case to a status.
public enum BrokerError: Error, Equatable, CustomStringConvertible {
    /// A missing or invalid parameter: 400.
    case invalidRequest(String)
    /// No such transfer (or not visible to this server): 404.
    case transferNotFound(String)
    /// The transfer is not `stored` or `released`: 409.
    case notDownloadable(id: String, state: TransferState)
    /// The recipient is not one of the transfer's recipients: 403.
    case notARecipient(String)
    /// The token failed verification: 403.
    case invalidToken
    /// The token expired, or a single-use token was already used: 410.
    case tokenExpired(String)
    /// The transfer was deleted or purged: 410.
    case gone(id: String, state: TransferState)
    /// The transfer is quarantined: 451.
    case quarantined(id: String, verdict: Verdict)
    /// The upload is larger than `limits.maxUploadBytes`: 413.
    case tooLarge(limit: Int)
    /// An XEP-0363 slot already holds a file: 409.
    case slotTaken(String)
    /// The broker is stopping and takes no more uploads: 503.
    case unavailable(String)
    /// An IM server tried to delete a quarantined transfer, which belongs to the administrators: 409.
    case heldInQuarantine(id: String)
    /// The upload would exceed a quota: 429 with `Retry-After` for a daily one, 507 otherwise.
    case quotaExceeded(QuotaExceeded)

    public var description: String {
        switch self {
        case .invalidRequest(let message): message
        case .transferNotFound(let id): "no transfer \(id)"
        case .notDownloadable(let id, let state): "transfer \(id) is \(state.rawValue), not downloadable"
        case .notARecipient(let recipient): "\(recipient) is not a recipient of this transfer"
        case .invalidToken: "the download token is not valid"
        case .tokenExpired(let why): why
        case .gone(let id, let state): "transfer \(id) was \(state.rawValue)"
        case .quarantined(let id, let verdict):
            "transfer \(id) is quarantined: \(verdict.kind.rawValue) (\(verdict.signature ?? verdict.reason ?? ""))"
        case .tooLarge(let limit): "the upload exceeds limits.maxUploadBytes (\(limit) bytes)"
        case .slotTaken(let slot): "the upload slot \(slot) already holds a file; request a new slot"
        case .unavailable(let why): why
        case .heldInQuarantine(let id):
            "transfer \(id) is quarantined and belongs to the administrators now: it stays until an admin releases or deletes it (airlock quarantine …) or retention purges it"
        case .quotaExceeded(let exceeded): exceeded.description
        }
    }
}
