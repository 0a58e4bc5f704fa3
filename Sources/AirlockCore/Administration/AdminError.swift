/// Why an admin command cannot go on; each message says what to do next.
public enum AdminError: Error, Equatable, CustomStringConvertible {
    /// The ledger file does not exist.
    case noLedger(path: String)
    /// No transfer with this id.
    case unknownTransfer(String)
    /// The transfer is not in the state the command needs.
    case wrongState(id: String, state: TransferState, needed: String)
    /// The quarantined bytes are missing or do not decrypt.
    case unreadableQuarantine(id: String, reason: String)
    /// No configured quarantine key decrypts the quarantined bytes (the key was retired too early, or renamed).
    case missingQuarantineKey(id: String, reason: String)
    /// The decrypted bytes are not those the ledger recorded.
    case hashMismatch(id: String)
    /// An export's destination already exists (or is a symbolic link); nothing is overwritten or followed.
    case exportDestinationExists(path: String)
    /// An export failed after its destination was created; the partial file was removed.
    case exportFailed(id: String, path: String, reason: String)
    /// The audit log has no entry to anchor.
    case emptyAuditLog

    public var description: String {
        switch self {
        case .noLedger(let path):
            "no ledger at \(path): start the broker once with `airlock serve`, or point storage.dataDirectory (--config or "
                + "AIRLOCK_STORAGE_DATA_DIRECTORY) at the broker's data directory"
        case .unknownTransfer(let id):
            "no transfer \(id): list transfers with `airlock transfers list` or `airlock quarantine list`"
        case .wrongState(let id, let state, let needed):
            "transfer \(id) is \(state.rawValue); this needs a transfer that is \(needed)"
        case .unreadableQuarantine(let id, let reason):
            "the quarantined bytes of \(id) cannot be read: \(reason); run `airlock doctor`"
        case .missingQuarantineKey(let id, let reason):
            "the quarantined bytes of \(id) cannot be decrypted: \(reason)"
        case .hashMismatch(let id):
            "the quarantined bytes of \(id) do not match the SHA-256 in the ledger; run `airlock doctor`"
        case .exportDestinationExists(let path):
            "\(path) already exists (a file, a directory or a symbolic link); export never overwrites or follows one: "
                + "choose a new path, or remove the existing one first"
        case .exportFailed(let id, let path, let reason):
            "exporting \(id) failed: \(reason); the partial file \(path) was removed (the audit log records the attempt)"
        case .emptyAuditLog:
            "the audit log is empty: there is no entry to anchor yet"
        }
    }
}
