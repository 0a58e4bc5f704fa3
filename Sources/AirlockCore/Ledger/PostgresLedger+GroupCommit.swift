import PostgresNIO

extension PostgresLedger {
    public func recordHandOffs(_ group: [GroupMember], beforeCommit: @escaping @Sendable () throws -> Void) async throws -> [Result<Void, any Error>] {
        let outcomes = try await self.transaction { connection in
            try await connection.query("SELECT pg_advisory_xact_lock_shared(\(LockKey.content))", logger: self.logger)
            // Every member's locks at once, each kind sorted, in the order `insert` takes them (quota subjects, content,
            // slot), before any member takes the audit head: a member taking one after another member held the audit
            // head could wait on a transaction that waits for the audit head.
            try await self.lockQuotaSubjects(group.flatMap { $0.entry.quota?.subjects ?? [] }, connection)
            try await self.lock(group.filter(\.entry.verdict.isClean).map(\.entry.transfer.sha256), seed: 0, connection)
            try await self.lock(group.compactMap(\.entry.slot), seed: 1, connection)
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

extension PostgresLedger {
    /// Takes the transaction-level advisory lock of each of `names` (`hashtextextended(name, seed)`), each once and
    /// sorted, so every transaction takes them in one order; all in one statement. Its rows come out of `unnest` in
    /// the array's order and are sorted by that position before the locks are taken (PostgreSQL evaluates a volatile
    /// output expression after the sort), so the order holds either way.
    func lock(_ names: [String], seed: Int64, _ connection: PostgresConnection) async throws {
        let sorted = Set(names).sorted()
        guard sorted.count > 1 else {
            if let name = sorted.first {
                try await connection.query("SELECT pg_advisory_xact_lock(hashtextextended(\(name), \(seed)))", logger: self.logger)
            }
            return
        }
        _ = try await connection.query(
            """
            SELECT pg_advisory_xact_lock(hashtextextended(name, \(seed)))
            FROM unnest(\(sorted)::text[]) WITH ORDINALITY AS lock(name, position) ORDER BY position
            """,
            logger: self.logger
        ).collect()
    }
}
