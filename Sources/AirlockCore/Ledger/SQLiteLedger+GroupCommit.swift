import GRDB

extension SQLiteLedger {
    public func recordHandOffs(_ group: [GroupMember], beforeCommit: @escaping @Sendable () throws -> Void) async throws -> [Result<Void, any Error>] {
        let outcomes = try await self.writer.write { db in
            var outcomes: [Result<Void, any Error>] = []
            for member in group {
                do {
                    // A savepoint per member: one that fails is rolled back alone, the group goes on.
                    try db.inSavepoint {
                        try Self.insert(member.entry, db, node: self.node, inTransaction: member.inTransaction)
                        try self.publish(member.entry, db)
                        return .commit
                    }
                    outcomes.append(.success(()))
                } catch {
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
