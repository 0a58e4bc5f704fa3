
extension Administration {
    /// One way the audit log fails verification.
    public struct AuditProblem: Sendable, Equatable, CustomStringConvertible {
        /// The entry at fault (or the position where one is missing).
        public var entryId: Int64
        /// What is wrong.
        public var problem: String

        public var description: String { "entry \(self.entryId): \(self.problem)" }
    }

    /// The head of the audit chain, to keep off the host: a later `verifyAudit(anchor:)` fails if this entry is
    /// gone or changed, which the chain alone cannot notice when entries are cut off its end.
    public struct AuditAnchor: Sendable, Equatable, Codable, CustomStringConvertible {
        /// The entry's id.
        public var id: Int64
        /// The entry's hash (64 lowercase hexadecimal digits).
        public var hash: String

        /// Creates an anchor.
        public init(id: Int64, hash: String) {
            self.id = id
            self.hash = hash
        }

        /// Parses `ID:HASH` as ``description`` prints it; nil when malformed.
        public init?(_ text: String) {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2, let id = Int64(parts[0]), id > 0 else { return nil }
            let hash = parts[1].lowercased()
            guard hash.utf8.count == 64, hash.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }) else { return nil }
            self.init(id: id, hash: hash)
        }

        /// `ID:HASH`.
        public var description: String { "\(self.id):\(self.hash)" }
    }

    /// The last entry of the audit log, with its anchor.
    ///
    /// - Throws: ``AdminError/emptyAuditLog`` when there is no entry.
    public func auditHead() async throws -> AuditEntry {
        guard let last = try await self.ledger.auditEntries(transferId: nil, limit: 1).last else { throw AdminError.emptyAuditLog }
        return last
    }

    /// Checks the hash chain: every entry's hash covers its columns and the previous entry's hash, ids run
    /// without gaps, and every transfer has the entry that recorded its creation (which catches a truncated tail).
    ///
    /// - Parameter anchor: a head printed earlier by `airlock audit anchor`: the entry with its id must still be
    ///   there with that hash, so a cut-off tail or a rewritten chain is found too.
    /// - Returns: every problem found, in log order; empty when the log is intact.
    public func verifyAudit(anchor: AuditAnchor? = nil) async throws -> [AuditProblem] {
        let chain = try await self.ledger.auditChain()
        var problems: [AuditProblem] = []
        var previousHash = AuditEntry.genesisHash
        var expectedId: Int64 = 1
        let entries = chain.entries
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
        let unrecorded = chain.transfersWithoutCreation
        for transferId in unrecorded {
            problems.append(
                AuditProblem(entryId: expectedId, problem: "transfer \(transferId) has no creation entry (entries removed from the end?)")
            )
        }
        if let anchor {
            if let anchored = entries.first(where: { $0.id == anchor.id }) {
                if anchored.hash != anchor.hash {
                    problems.append(
                        AuditProblem(
                            entryId: anchor.id,
                            problem: "its hash \(anchored.hash) is not the anchor's \(anchor.hash) (the log was rewritten at or before it)"
                        )
                    )
                }
            } else {
                problems.append(
                    AuditProblem(
                        entryId: anchor.id,
                        problem: "the anchored entry is missing (the log ends at \(entries.last?.id ?? 0): entries were cut off its end)"
                    )
                )
            }
        }
        return problems
    }
}
