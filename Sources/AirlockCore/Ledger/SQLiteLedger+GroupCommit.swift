import GRDB

extension SQLiteLedger {
    public func recordHandOffs(_ group: [GroupMember], beforeCommit: @escaping @Sendable () throws -> Void) async throws -> [Result<Void, any Error>] {
        let outcomes = try await self.writer.write { db in
            var outcomes: [Result<Void, any Error>] = []
            // A savepoint per member: one that fails is rolled back alone, the group goes on. Cached statements
            // rather than `inSavepoint`, which compiles its SAVEPOINT and RELEASE again for every member.
            let begin = try db.cachedStatement(sql: "SAVEPOINT handOff")
            let release = try db.cachedStatement(sql: "RELEASE SAVEPOINT handOff")
            for member in group {
                try begin.execute()
                do {
                    try Self.insert(member.entry, db, node: self.node, inTransaction: member.inTransaction)
                    try self.publish(member.entry, db)
                    try release.execute()
                    outcomes.append(.success(()))
                } catch {
                    // Undone alone; if even that fails, the group's transaction fails and records nothing.
                    try db.cachedStatement(sql: "ROLLBACK TO SAVEPOINT handOff").execute()
                    try release.execute()
                    outcomes.append(.failure(error))
                }
            }
            try beforeCommit()
            return outcomes
        }
        if group.contains(where: { !$0.entry.notifications.isEmpty }) { self.notifications.enqueued() }
        return outcomes
    }
}
