import GRDB

/// A sentence that says what to do about an error from the ledger (SQLite's result codes), for errors whose own
/// text does not.
public func operationalAdvice(for error: any Error) -> String? {
    guard let error = error as? DatabaseError else { return nil }
    switch error.resultCode {
    case .SQLITE_BUSY, .SQLITE_LOCKED:
        return "the ledger is locked by another process (a long write or a stuck command); try again in a moment, "
            + "and look for another `airlock` command that is still running"
    case .SQLITE_READONLY, .SQLITE_PERM, .SQLITE_CANTOPEN:
        return "the ledger cannot be opened for writing: run as the user that owns storage.dataDirectory"
    case .SQLITE_CORRUPT, .SQLITE_NOTADB:
        return "the ledger file is damaged: restore it from a backup"
    default:
        return nil
    }
}
