import PostgresNIO

extension PostgresLedger {
    public func recordHandOffs(_ group: [GroupMember], beforeCommit: @escaping @Sendable () throws -> Void) async throws -> [Result<Void, any Error>] {
        let outcomes = try await self.transaction { connection in
            try await connection.query("SELECT pg_advisory_xact_lock_shared(\(LockKey.content))", logger: self.logger)
            // Every member's locks at once, each kind sorted, in the order `insert` takes them (quota subjects, content,
            // slot), before any member takes the audit head: a member taking one after another member held the audit
            // head could wait on a transaction that waits for the audit head.
            try await self.lockQuotaSubjects(group.flatMap { $0.entry.quota?.subjects ?? [] }, connection)
            for sha256 in Set(group.filter(\.entry.verdict.isClean).map(\.entry.transfer.sha256)).sorted() {
                try await connection.query("SELECT pg_advisory_xact_lock(hashtextextended(\(sha256), 0))", logger: self.logger)
            }
            for slot in Set(group.compactMap(\.entry.slot)).sorted() {
                try await connection.query("SELECT pg_advisory_xact_lock(hashtextextended(\(slot), 1))", logger: self.logger)
            }
            // The audit head last, once for the group: each member's entry chains to the one before, carried here.
            var head = try await self.lockAuditHead(connection)
            var outcomes: [Result<Void, any Error>] = []
            for member in group {
                // A savepoint per member: one that fails is rolled back alone (the head stays where it was), the
                // group goes on.
                try await connection.query("SAVEPOINT hand_off", logger: self.logger)
                do {
                    let next = try await self.insert(member.entry, connection, inTransaction: member.inTransaction, head: head)
                    try await connection.query("RELEASE SAVEPOINT hand_off", logger: self.logger)
                    head = next
                    outcomes.append(.success(()))
                } catch {
                    try await connection.query("ROLLBACK TO SAVEPOINT hand_off", logger: self.logger)
                    let slotTaken = (error as? PSQLError)?.serverInfo?[.sqlState] == "23505" && member.entry.slot != nil
                    outcomes.append(.failure(slotTaken ? BrokerError.slotTaken(member.entry.slot ?? "") : error))
                }
            }
            try await Self.offThePool(beforeCommit)
            return outcomes
        }
        if group.contains(where: { !$0.entry.notifications.isEmpty }) { self.notifications.enqueued() }
        return outcomes
    }
}
