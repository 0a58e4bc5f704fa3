
#if canImport(Glibc)
    import Glibc
#endif

extension Administration {
    /// What re-encrypting one quarantined file did.
    public enum RekeyOutcome: Sendable, Equatable {
        /// The file was already under the active key: nothing was written.
        case alreadyActive
        /// The file was encrypted again under the active key; it was under `fromKeyId`.
        case rekeyed(fromKeyId: String)
        /// The transfer is not (or no longer) quarantined: released or deleted meanwhile. Nothing changed.
        case gone
    }

    /// The ids of every quarantined transfer, oldest first: what `airlock quarantine rekey` walks through.
    public func quarantinedTransferIds() async throws -> [String] {
        try await self.ledger.transfers(inStates: [.quarantined]).map(\.id)
    }

    /// Encrypts one quarantined transfer's file again under the active quarantine key, unless it already is.
    ///
    /// The new file is written beside the old one and synced, then, inside a ledger write transaction that checks
    /// the transfer is still quarantined, renamed over it and recorded in the audit log (`quarantine.rekeyed`, with
    /// both key ids). An interruption at any point leaves the old file or the new one, never neither, and a rerun
    /// skips what is done.
    ///
    /// - Throws: ``AdminError/missingQuarantineKey(id:reason:)`` when no configured key opens the file, and
    ///   ``AdminError/unreadableQuarantine(id:reason:)`` when it is missing or damaged (either way it is left as it
    ///   is); ``AdminError/hashMismatch(id:)`` when its bytes are not the ones the ledger recorded.
    public func rekeyQuarantined(id: String) async throws -> RekeyOutcome {
        let record = try await self.record(id)
        guard record.state == .quarantined else { return .gone }
        let store = self.store
        let rekeyed: FileStore.RekeyedFile
        do {
            guard let file = try store.reencryptQuarantined(transferId: id) else { return .alreadyActive }
            rekeyed = file
        } catch {
            // A delete or release may have removed the file since the state was read.
            guard try await self.record(id).state == .quarantined else { return .gone }
            throw Self.quarantineError(id: id, error)
        }
        guard rekeyed.sha256 == record.sha256 else {
            unlink(rekeyed.temporaryPath)
            throw AdminError.hashMismatch(id: id)
        }
        let event = AuditEvent(
            at: self.now,
            actor: self.actor,
            action: "quarantine.rekeyed",
            transferId: id,
            details: ["fromKeyId": rekeyed.fromKeyId, "toKeyId": store.activeQuarantineKeyId]
        )
        do {
            let changed = try await self.ledger.changeTransfer(id: id, event: event) { current in
                // A release or delete that committed meanwhile wins: its file must not come back.
                guard current.state == .quarantined else { return .skip }
                // Inside the transaction, so a failed rename rolls the audit entry back with it.
                try store.replaceQuarantined(transferId: id, with: rekeyed)
                return .keepState
            }
            guard changed != nil else {
                unlink(rekeyed.temporaryPath)
                return .gone
            }
            return .rekeyed(fromKeyId: rekeyed.fromKeyId)
        } catch {
            unlink(rekeyed.temporaryPath)
            throw error
        }
    }
}
