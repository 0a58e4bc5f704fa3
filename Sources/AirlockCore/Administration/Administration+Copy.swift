public import Logging

extension Administration {
    /// What `airlock ledger copy` did.
    public struct LedgerCopyReport: Sendable, Equatable, Codable {
        /// The rows read from this ledger.
        public var source: LedgerCounts
        /// The rows the target holds after the copy (the same, table by table).
        public var target: LedgerCounts
        /// The head of the copied audit chain, nil when the log was empty: `audit verify --anchor` on the target
        /// checks it.
        public var auditHead: AuditAnchor?
    }

    /// Why `airlock ledger copy` refused to start.
    public enum LedgerCopyRefusal: Error, Equatable, CustomStringConvertible {
        /// The other configuration does not name a PostgreSQL ledger.
        case targetNotPostgreSQL
        /// Both configurations name the same PostgreSQL database.
        case sameLedger(database: String)
        /// After the copy the target does not hold what was read (never expected: the copy is one transaction).
        case countsDiffer(source: LedgerCounts, target: LedgerCounts)

        public var description: String {
            switch self {
            case .targetNotPostgreSQL:
                "the configuration given with --to does not name a PostgreSQL ledger: set \"ledger\": {\"backend\": \"postgresql\", "
                    + "\"postgresql\": {\"url\": \"postgres://…\"}} in it (or AIRLOCK_LEDGER_BACKEND and AIRLOCK_LEDGER_POSTGRESQL_URL, "
                    + "which apply to both configurations)"
            case .sameLedger(let database):
                "--config and --to name the same ledger (the PostgreSQL database \(database)): --config names the ledger to copy, "
                    + "--to the new, empty one"
            case .countsDiffer(let source, let target):
                "the target holds other rows than were copied (read \(source), found \(target)): run `airlock audit verify` on both, "
                    + "and copy again into a new, empty database"
            }
        }
    }

    /// Copies this ledger, row for row, into the empty PostgreSQL ledger that `target` names (migrated first):
    /// transfers, recipients, token issuances, downloads, upload slots, cached verdicts and the audit log with its
    /// ids and hashes, so `audit verify` (and an anchor taken on this ledger) holds on the target. The rows are
    /// read in one transaction and written in one: an interrupted copy leaves the target empty. Bytes are not
    /// copied: they stay in `storage.*`, which the nodes of the target share.
    ///
    /// - Parameter progress: called once the rows are read (with the counts), then after each table is written.
    /// - Throws: ``LedgerCopyRefusal`` when the target is not PostgreSQL or is this ledger,
    ///   ``LedgerCopyError/targetNotEmpty(_:)`` when it already holds rows.
    public func copyLedger(
        to target: AirlockConfiguration,
        logger: Logger,
        progress: @escaping @Sendable (LedgerCopyProgress) -> Void = { _ in }
    ) async throws -> LedgerCopyReport {
        guard case .postgresql(let targetSettings) = target.ledger.backend else { throw LedgerCopyRefusal.targetNotPostgreSQL }
        let sourceBackend = self.transferService.configuration.ledger.backend
        if case .postgresql(let sourceSettings) = sourceBackend, sourceSettings.isSameDatabase(as: targetSettings) {
            throw LedgerCopyRefusal.sameLedger(database: targetSettings.database)
        }
        let destination = try await PostgresLedger.connect(targetSettings, node: target.node.id, logger: logger)
        do {
            let report = try await self.copyLedger(into: destination, progress: progress)
            await destination.close()
            return report
        } catch {
            await destination.close()
            throw error
        }
    }

    /// Copies this ledger into `destination`, which must be empty (any ``Ledger``: the copy works both ways).
    public func copyLedger(
        into destination: any Ledger,
        progress: @escaping @Sendable (LedgerCopyProgress) -> Void = { _ in }
    ) async throws -> LedgerCopyReport {
        // Refused before reading anything; checked again inside the writing transaction.
        let existing = try await destination.rowCounts()
        guard existing.isEmpty else { throw LedgerCopyError.targetNotEmpty(existing) }
        let snapshot = try await self.ledger.exportSnapshot()
        let source = snapshot.counts
        progress(.read(source))
        try await destination.importSnapshot(snapshot) { table, count in progress(.wrote(table, count)) }
        let written = try await destination.rowCounts()
        guard written == source else { throw LedgerCopyRefusal.countsDiffer(source: source, target: written) }
        let head = snapshot.auditLog.last.map { AuditAnchor(id: $0.id ?? 0, hash: $0.hash) }
        return LedgerCopyReport(source: source, target: written, auditHead: head)
    }

    /// A step of a ledger copy.
    public enum LedgerCopyProgress: Sendable, Equatable {
        /// Every row was read: this many per table.
        case read(LedgerCounts)
        /// One table was written (not yet committed): this many rows.
        case wrote(LedgerTable, Int)
    }
}

extension AirlockConfiguration.PostgreSQL {
    /// Whether `other` names the same database on the same server (users and passwords aside).
    func isSameDatabase(as other: Self) -> Bool {
        self.host?.lowercased() == other.host?.lowercased() && self.socketDirectory == other.socketDirectory && self.port == other.port
            && self.database == other.database
    }
}

extension LedgerCounts: CustomStringConvertible {
    public var description: String {
        LedgerTable.allCases.map { "\(self[$0]) \($0.label)" }.joined(separator: ", ")
    }
}
