import Crypto
public import Foundation
public import GRDB

/// One entry of the append-only, hash-chained audit log: each entry's hash covers the previous entry's hash.
public struct AuditEntry: Sendable, Equatable, Codable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "audit_log"
    /// Position in the chain (1, 2, …).
    public var id: Int64?
    /// When.
    public var at: Date
    /// Who: an operating-system user (`admin:alice`), an IM server (`server:prosody`) or the broker itself.
    public var actor: String
    /// What: `transfer.created`, `transfer.deleted`, `quarantine.released`, …
    public var action: String
    /// The transfer concerned, if any.
    public var transferId: String?
    /// Details as a JSON object with sorted keys.
    public var details: String
    /// The previous entry's hash (64 zeros for the first).
    public var previousHash: String
    /// SHA-256 over the previous hash and every other column of this entry.
    public var hash: String

    public mutating func didInsert(_ inserted: InsertionSuccess) {
        self.id = inserted.rowID
    }

    /// The hash of the first entry's predecessor.
    public static let genesisHash = String(repeating: "0", count: 64)

    /// The hash this entry should carry, computed from its other columns.
    public func computedHash() -> String {
        let fields = [
            self.previousHash, String(self.id ?? 0), String(Int64((self.at.timeIntervalSince1970 * 1000).rounded())), self.actor, self.action,
            self.transferId ?? "", self.details,
        ]
        // Length-prefixed fields, so no two different entries serialise the same.
        let canonical = fields.map { "\($0.utf8.count):\($0)" }.joined(separator: "|")
        return SHA256.hash(data: Data(canonical.utf8)).hexString
    }
}

extension AuditEntry {
    /// The entry that records `event` after the entry `afterId` with hash `hash` (0 and ``genesisHash`` for the
    /// first): its time rounded to the millisecond (what the ledgers keep, so the hash survives the round trip),
    /// its details as sorted JSON, its hash computed. Every ledger appends through this.
    static func next(afterId lastId: Int64, hash lastHash: String, _ event: AuditEvent) throws -> AuditEntry {
        var entry = AuditEntry(
            id: lastId + 1,
            at: Date(timeIntervalSince1970: (event.at.timeIntervalSince1970 * 1000).rounded() / 1000),
            actor: event.actor,
            action: event.action,
            transferId: event.transferId,
            details: try AuditLog.json(event.details),
            previousHash: lastHash,
            hash: ""
        )
        entry.hash = entry.computedHash()
        return entry
    }
}

/// Appends to and reads the audit log.
public enum AuditLog {
    /// Appends an entry inside the caller's write transaction, chained to the last one.
    @discardableResult
    public static func append(
        _ db: Database,
        at date: Date,
        actor: String,
        action: String,
        transferId: String?,
        details: [String: String] = [:]
    ) throws -> AuditEntry {
        // Cached statements: every hand-off appends an entry under the ledger's write lock.
        let last = try Row.fetchOne(db.cachedStatement(sql: "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1"))
        let lastId: Int64 = last?[0] ?? 0
        let lastHash: String = last?[1] ?? AuditEntry.genesisHash
        let entry = try AuditEntry.next(
            afterId: lastId,
            hash: lastHash,
            AuditEvent(at: date, actor: actor, action: action, transferId: transferId, details: details)
        )
        try db.cachedStatement(
            sql: "INSERT INTO audit_log (id, at, actor, action, transferId, details, previousHash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        ).execute(arguments: [
            entry.id, entry.at.databaseArgument, entry.actor, entry.action, entry.transferId, entry.details, entry.previousHash, entry.hash,
        ])
        return entry
    }

    /// A time for `details`: ISO 8601 in UTC to the second, `2026-11-22T14:03:09Z`.
    public static func timestamp(_ date: Date) -> String {
        date.formatted(.iso8601)
    }

    /// `details` as a JSON object with sorted keys, byte for byte as `JSONEncoder` with `.sortedKeys` and
    /// `.withoutEscapingSlashes` writes it. Written directly when no key or value needs escaping (the common case:
    /// digests, sizes, verdicts), which saves an encoder per entry; otherwise through the encoder.
    ///
    /// Keys are sorted by Swift's `<`; the encoder compares digit runs numerically and ignores case, which gives
    /// the same order for the lowercase keys the broker writes, none of which differ first at a digit (`a10`
    /// beside `a2` would sort differently).
    static func json(_ details: [String: String]) throws -> String {
        guard details.allSatisfy({ PlainJSON.isPlain($0.key) && PlainJSON.isPlain($0.value) }) else {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            return String(decoding: try encoder.encode(details), as: UTF8.self)
        }
        let fields = details.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\"\($0.value)\"" }
        return "{" + fields.joined(separator: ",") + "}"
    }
}
