import Foundation
import Testing

@testable import AirlockCore

/// `exportSnapshot` and `importSnapshot` (what `airlock ledger copy` runs), from each backend into each backend:
/// every row arrives as it was, the audit chain still verifies with the source's head, a non-empty target is
/// refused, a failed copy writes nothing, and the target goes on where the source stopped.
@Suite("ledger copy")
struct LedgerCopyTests {
    typealias Contract = LedgerContractTests

    /// A source with a row in every table: two hand-offs (one through an XEP-0363 slot, its verdict cached), a used
    /// token, an issuance with its audit entry, downloads, a state change and an entry whose details need escaping.
    static func populate(_ ledger: any Ledger) async throws {
        var clean = Contract.handOff("t1", recipients: ["bob@example.org", "carol@example.org"], slot: "s1/a.pdf", cacheVerdict: true)
        clean.transfer.node = "node-a"
        try await Contract.record(clean, in: ledger)
        var infected = Contract.handOff("t2", verdict: .infected(signature: "Eicar-Test-Signature"), created: Contract.at(minutes: 1))
        infected.transfer.node = "node-b"
        try await Contract.record(infected, in: ledger)
        #expect(try await ledger.consumeToken(id: "t1/token/bob@example.org", at: Contract.at(milliseconds: 90_123)))
        let issuance = TokenIssuanceRecord(
            tokenId: "t1/admin",
            transferId: "t1",
            recipient: "dave@example.org",
            keyId: "k2",
            issuedAt: Contract.at(minutes: 2),
            expiresAt: Contract.at(minutes: 62),
            usedAt: nil
        )
        try await ledger.recordIssuance(
            issuance,
            audit: AuditEvent(
                at: Contract.at(minutes: 2),
                actor: "admin:root",
                action: "token.issued",
                transferId: "t1",
                details: ["tokenId": "t1/admin"]
            )
        )
        for (index, status) in [200, 206].enumerated() {
            try await ledger.recordDownload(
                DownloadRecord(
                    transferId: "t1",
                    recipient: "bob@example.org",
                    at: Contract.at(milliseconds: 150_000 + Int64(index)),
                    remoteAddress: "192.0.2.\(index)",
                    bytes: 48_213,
                    status: status
                )
            )
        }
        try await Contract.set("t2", to: .deleted, at: Contract.at(minutes: 3), in: ledger)
        try await ledger.appendAudit(
            AuditEvent(
                at: Contract.at(milliseconds: 240_007),
                actor: "admin:root",
                action: "quarantine.exported",
                transferId: "t2",
                details: ["to": "/tmp/\"quoted\" ü\u{202E}/x", "reason": "line\nbreak"]
            )
        )
    }

    /// Every row of `snapshot`, encoded with dates as whole milliseconds (what both ledgers keep), for comparison.
    static func rows(_ snapshot: LedgerSnapshot) throws -> [String] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(Int64((date.timeIntervalSince1970 * 1000).rounded()))
        }
        func encoded(_ rows: some Encodable) throws -> String { String(decoding: try encoder.encode(rows), as: UTF8.self) }
        return [
            try encoded(snapshot.transfers), try encoded(snapshot.recipients), try encoded(snapshot.tokenIssuances),
            try encoded(snapshot.downloads), try encoded(snapshot.uploadSlots), try encoded(snapshot.verdictCache),
            try encoded(snapshot.auditLog), try encoded(snapshot.notificationOutbox),
        ]
    }

    /// Runs `body` with a fresh source and target, closing both whatever happens.
    static func withLedgers(
        _ sourceBackend: LedgerBackend,
        _ targetBackend: LedgerBackend,
        _ body: (any Ledger, any Ledger) async throws -> Void
    ) async throws {
        // The source publishes signature reloads to one webhook, so that the copy has an outbox row to carry.
        let webhook = AirlockConfiguration.Webhook(
            url: "https://ops.example.org/hook",
            secret: "ops-secret-0123456789abc",
            events: [.signaturesReloaded]
        )
        let (source, closeSource) = try await sourceBackend.open(notifications: NotificationRouter([webhook]))
        let target: any Ledger
        let closeTarget: @Sendable () async throws -> Void
        do {
            (target, closeTarget) = try await targetBackend.open()
        } catch {
            try? await closeSource()
            throw error
        }
        do {
            try await body(source, target)
        } catch {
            try? await closeSource()
            try? await closeTarget()
            throw error
        }
        try await closeSource()
        try await closeTarget()
    }

    @Test(arguments: LedgerBackend.available, LedgerBackend.available)
    func everyRowArrivesAsItWasAndTheChainStillVerifies(from sourceBackend: LedgerBackend, to targetBackend: LedgerBackend) async throws {
        try await Self.withLedgers(sourceBackend, targetBackend) { source, target in
            try await Self.populate(source)
            try await source.enqueueNotification(.signaturesReloaded(version: "daily-27001", at: Contract.at(minutes: 9)))
            #expect(try await target.isEmpty())
            let snapshot = try await source.exportSnapshot()
            #expect(
                snapshot.counts
                    == LedgerCounts(
                        transfers: 2,
                        recipients: 3,
                        tokenIssuances: 3,
                        downloads: 2,
                        uploadSlots: 1,
                        verdictCache: 1,
                        auditLog: 5,
                        notificationOutbox: 1
                    )
            )
            #expect(try await source.rowCounts() == snapshot.counts)
            let head = try #require(snapshot.auditLog.last)

            let written = Contract.Observed<String>()
            try await target.importSnapshot(snapshot) { table, count in written.append("\(table.rawValue) \(count)") }
            #expect(
                written.values == [
                    "transfers 2", "recipients 3", "tokenIssuances 3", "downloads 2", "uploadSlots 1", "verdictCache 1", "auditLog 5",
                    "notificationOutbox 1",
                ]
            )
            #expect(try await target.rowCounts() == snapshot.counts)
            #expect(try Self.rows(try await target.exportSnapshot()) == Self.rows(snapshot))

            // The chain is the source's, byte for byte: the same head, intact, every transfer with its creation entry.
            let chain = try await target.auditChain()
            Contract.expectIntactChain(chain.entries)
            #expect(chain.transfersWithoutCreation.isEmpty)
            #expect(chain.entries.last?.hash == head.hash)
            #expect(chain.entries.map(\.details) == snapshot.auditLog.map(\.details))

            // What the broker reads works on the copy: the slot, the cache, the used and unused tokens, the node.
            #expect(try await target.transfer(inSlot: "s1/a.pdf")?.id == "t1")
            #expect(try await target.transfer(id: "t1")?.0.node == "node-a")
            #expect(try await target.transfer(id: "t2")?.0.state == .deleted)
            let cached = try await target.cachedVerdict(sha256: Contract.digest(of: "t1"), signatureVersion: "sigs-27001")
            #expect(cached?.detectedType == "application/pdf")
            #expect(try await target.consumeToken(id: "t1/token/bob@example.org", at: Contract.at(minutes: 9)) == false)
            #expect(try await target.consumeToken(id: "t1/token/carol@example.org", at: Contract.at(minutes: 9)))

            // And the target goes on where the source stopped: the next entry follows the copied head, the next
            // download takes the next id.
            try await target.appendAudit(AuditEvent(at: Contract.at(minutes: 10), actor: "admin:root", action: "test.after", transferId: nil))
            let after = try await target.auditChain().entries
            Contract.expectIntactChain(after)
            #expect(after.last?.previousHash == head.hash)
            try await target.recordDownload(
                DownloadRecord(transferId: "t1", recipient: nil, at: Contract.at(minutes: 11), remoteAddress: nil, bytes: 1, status: 200)
            )
            let downloads = try #require(try await target.detail(id: "t1")).downloads
            #expect(downloads.map(\.id) == snapshot.downloads.map(\.id) + [(snapshot.downloads.last?.id ?? 0) + 1])
        }
    }

    @Test(arguments: LedgerBackend.available, LedgerBackend.available)
    func aTargetThatHoldsRowsIsRefusedAndAFailedCopyWritesNothing(from sourceBackend: LedgerBackend, to targetBackend: LedgerBackend) async throws {
        try await Self.withLedgers(sourceBackend, targetBackend) { source, target in
            try await Self.populate(source)
            let snapshot = try await source.exportSnapshot()

            // The last audit entry twice: the copy fails on the very last row, and nothing of it stays.
            var broken = snapshot
            broken.auditLog.append(try #require(snapshot.auditLog.last))
            await #expect(throws: (any Error).self) { try await target.importSnapshot(broken) { _, _ in } }
            #expect(try await target.rowCounts() == LedgerCounts())

            try await target.importSnapshot(snapshot) { _, _ in }
            await #expect(throws: LedgerCopyError.targetNotEmpty(snapshot.counts)) {
                try await target.importSnapshot(snapshot) { _, _ in }
            }
            #expect(try await target.rowCounts() == snapshot.counts)

            // A ledger with only an audit entry is not empty either.
            let (other, close) = try await targetBackend.open()
            try await other.appendAudit(AuditEvent(at: Contract.at(minutes: 0), actor: "admin:root", action: "test.only", transferId: nil))
            #expect(try await other.isEmpty() == false)
            await #expect(throws: LedgerCopyError.self) { try await other.importSnapshot(snapshot) { _, _ in } }
            try await close()
        }
    }
}
