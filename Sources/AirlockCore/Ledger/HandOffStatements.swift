import Foundation
import GRDB

// The rows every hand-off writes, through cached statements with positional arguments. GRDB's record methods
// build the SQL and encode each record through `Codable` on every call, which cost several times what SQLite
// itself does for these small rows; the hand-off's transaction runs under the ledger's single write lock, so its
// length bounds how many hand-offs per second the broker can take. Each statement writes the same columns, in the
// same representation (dates as the text GRDB stores, enums as their raw values), as the record's own `insert`;
// `HandOffEncodingTests` reads every row back through the records to hold them to that.

extension Date {
    /// What GRDB binds for a date (`2026-11-22 07:41:12.987`, UTC), written without its `DateFormatter`.
    var databaseArgument: any DatabaseValueConvertible {
        CivilTime(self, rounding: .toNearestOrAwayFromZero)?.databaseString ?? self
    }
}

extension TransferRecord {
    /// Inserts the row, as `insert(_:)` does.
    func insertWithCachedStatement(_ db: Database) throws {
        let statement = try db.cachedStatement(
            sql: """
                INSERT INTO transfer (id, server, sender, filename, originalFilename, declaredType, detectedType,
                    typeDescription, size, sha256, verdict, signature, reason, state, signatureVersion, createdAt, updatedAt, node,
                    contentClass)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """
        )
        try statement.execute(arguments: [
            self.id, self.server, self.sender, self.filename, self.originalFilename, self.declaredType, self.detectedType,
            self.typeDescription, self.size, self.sha256, self.verdict.rawValue, self.signature, self.reason,
            self.state.rawValue, self.signatureVersion, self.createdAt.databaseArgument, self.updatedAt.databaseArgument, self.node,
            self.contentClass.rawValue,
        ])
    }
}

extension RecipientRecord {
    /// Inserts the row, as `insert(_:)` does.
    func insertWithCachedStatement(_ db: Database) throws {
        let statement = try db.cachedStatement(sql: "INSERT INTO transferRecipient (transferId, recipient) VALUES (?, ?)")
        try statement.execute(arguments: [self.transferId, self.recipient])
    }
}

extension TokenIssuanceRecord {
    /// Inserts the row, as `insert(_:)` does.
    func insertWithCachedStatement(_ db: Database) throws {
        let statement = try db.cachedStatement(
            sql: """
                INSERT INTO tokenIssuance (tokenId, transferId, recipient, keyId, issuedAt, expiresAt, usedAt)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """
        )
        try statement.execute(arguments: [
            self.tokenId, self.transferId, self.recipient, self.keyId, self.issuedAt.databaseArgument, self.expiresAt.databaseArgument,
            self.usedAt?.databaseArgument,
        ])
    }
}

extension VerdictCacheRecord {
    /// Inserts or replaces the row, as `save(_:)` does.
    func saveWithCachedStatement(_ db: Database) throws {
        let statement = try db.cachedStatement(
            sql: """
                INSERT OR REPLACE INTO verdictCache (sha256, signatureVersion, detectedType, typeDescription, createdAt, scannerFailure)
                VALUES (?, ?, ?, ?, ?, ?)
                """
        )
        try statement.execute(arguments: [
            self.sha256, self.signatureVersion, self.detectedType, self.typeDescription, self.createdAt.databaseArgument, self.scannerFailure,
        ])
    }

    /// The row for these bytes and signatures, as `fetchOne(_:key:)` finds it.
    static func fetchWithCachedStatement(_ db: Database, sha256: String, signatureVersion: String) throws -> VerdictCacheRecord? {
        let statement = try db.cachedStatement(
            sql: "SELECT detectedType, typeDescription, createdAt, scannerFailure FROM verdictCache WHERE sha256 = ? AND signatureVersion = ?"
        )
        guard let row = try Row.fetchOne(statement, arguments: [sha256, signatureVersion]) else { return nil }
        return VerdictCacheRecord(
            sha256: sha256,
            signatureVersion: signatureVersion,
            detectedType: row[0],
            typeDescription: row[1],
            createdAt: row[2],
            scannerFailure: row[3]
        )
    }
}

extension UploadSlotRecord {
    /// Inserts the row, as `insert(_:)` does.
    func insertWithCachedStatement(_ db: Database) throws {
        let statement = try db.cachedStatement(sql: "INSERT INTO uploadSlot (path, transferId, createdAt) VALUES (?, ?, ?)")
        try statement.execute(arguments: [self.path, self.transferId, self.createdAt.databaseArgument])
    }
}
