import GRDB

extension Administration {
    /// One way the audit log fails verification.
    public struct AuditProblem: Sendable, Equatable, CustomStringConvertible {
        /// The entry at fault (or the position where one is missing).
        public var entryId: Int64
        /// What is wrong.
        public var problem: String

        public var description: String { "entry \(self.entryId): \(self.problem)" }
    }

    /// Checks the hash chain: every entry's hash covers its columns and the previous entry's hash, ids run
    /// without gaps, and every transfer has the entry that recorded its creation (which catches a truncated tail).
    ///
    /// - Returns: every problem found, in log order; empty when the log is intact.
    public func verifyAudit() async throws -> [AuditProblem] {
        try await self.database.writer.read { db in
            var problems: [AuditProblem] = []
            var previousHash = AuditEntry.genesisHash
            var expectedId: Int64 = 1
            let entries = try AuditEntry.order(Column("id")).fetchAll(db)
            for entry in entries {
                let id = entry.id ?? 0
                if id > expectedId {
                    let missing = expectedId == id - 1 ? "\(expectedId)" : "\(expectedId)–\(id - 1)"
                    problems.append(AuditProblem(entryId: expectedId, problem: "entries \(missing) are missing (deleted)"))
                }
                if entry.previousHash != previousHash {
                    problems.append(
                        AuditProblem(entryId: id, problem: "does not follow the entry before it (deleted, reordered or inserted entries)")
                    )
                }
                if entry.computedHash() != entry.hash {
                    problems.append(AuditProblem(entryId: id, problem: "its content was altered (\(entry.action), \(entry.actor))"))
                }
                previousHash = entry.hash
                expectedId = id + 1
            }
            let unrecorded = try String.fetchAll(
                db,
                sql: """
                    SELECT id FROM transfer WHERE id NOT IN
                    (SELECT transferId FROM audit_log WHERE action = 'transfer.created' AND transferId IS NOT NULL)
                    ORDER BY createdAt
                    """
            )
            for transferId in unrecorded {
                problems.append(
                    AuditProblem(entryId: expectedId, problem: "transfer \(transferId) has no creation entry (entries removed from the end?)")
                )
            }
            return problems
        }
    }
}
