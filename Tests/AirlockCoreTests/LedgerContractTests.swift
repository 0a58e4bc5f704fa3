import Foundation
import Synchronization
import Testing

@testable import AirlockCore

/// What every ``Ledger`` promises its callers, written once against `any Ledger` and run for each backend in
/// ``LedgerBackend``. Each test opens a fresh, empty ledger and observes it only through the protocol.
@Suite("ledger contract")
struct LedgerContractTests {
    // MARK: Fixtures

    /// The fixed clock: `base` plus whole milliseconds, so every date survives the ledger's millisecond storage.
    static func at(milliseconds: Int64) -> Date {
        Date(timeIntervalSince1970: Double(1_795_334_472_987 + milliseconds) / 1000)
    }

    /// `minutes` after the fixed clock's base.
    static func at(minutes: Int64) -> Date { Self.at(milliseconds: minutes * 60_000) }

    /// A distinct SHA-256-shaped digest (64 lowercase hex digits) per `seed`.
    static func digest(_ seed: Int) -> String {
        let hex = String(seed, radix: 16)
        return String(repeating: "0", count: 64 - hex.count) + hex
    }

    /// A distinct SHA-256-shaped digest per short transfer id: its bytes in hex, padded with `f`.
    static func digest(of id: String) -> String {
        let hex = id.utf8.map { String($0 >> 4, radix: 16) + String($0 & 0xf, radix: 16) }.joined()
        return String(hex.prefix(64)) + String(repeating: "f", count: max(0, 64 - hex.count))
    }

    /// The hand-off a broker would record: the transfer (stored when clean, quarantined otherwise), its recipients,
    /// one download token per recipient for a stored transfer, and the given slot and cache decision.
    static func handOff(
        _ id: String,
        verdict: Verdict = .clean,
        sender: String = "alice@example.org",
        recipients: [String] = ["bob@example.org"],
        sha256: String? = nil,
        signatureVersion: String = "sigs-27001",
        created: Date = Self.at(minutes: 0),
        slot: String? = nil,
        cacheVerdict: Bool = false
    ) -> HandOffEntry {
        let state: TransferState = verdict.isClean ? .stored : .quarantined
        let transfer = TransferRecord(
            id: id,
            server: "prosody",
            sender: sender,
            filename: "\(id).pdf",
            originalFilename: "reports/\(id).pdf",
            declaredType: "application/pdf",
            detectedType: "application/pdf",
            typeDescription: "PDF document, version 1.7",
            size: 48_213,
            sha256: sha256 ?? Self.digest(of: id),
            verdict: verdict.kind,
            signature: verdict.signature,
            reason: verdict.reason,
            state: state,
            signatureVersion: signatureVersion,
            createdAt: created,
            updatedAt: created
        )
        let issuances =
            state == .stored
            ? recipients.map {
                TokenIssuanceRecord(
                    tokenId: "\(id)/token/\($0)",
                    transferId: id,
                    recipient: $0,
                    keyId: "k1",
                    issuedAt: created,
                    expiresAt: created.addingTimeInterval(86_400),
                    usedAt: nil
                )
            } : []
        return HandOffEntry(
            transfer: transfer,
            recipients: recipients,
            issuances: issuances,
            verdict: verdict,
            cacheVerdict: cacheVerdict,
            slot: slot
        )
    }

    /// Runs `body` against a fresh ledger of `backend`, closing it afterwards whatever happens.
    func withLedger(_ backend: LedgerBackend, _ body: (any Ledger) async throws -> Void) async throws {
        let (ledger, close) = try await backend.open()
        do {
            try await body(ledger)
        } catch {
            try? await close()
            throw error
        }
        try await close()
    }

    /// Two ledgers of `backend` on the same store, as two nodes would open it.
    func withTwoLedgers(_ backend: LedgerBackend, _ body: (any Ledger, any Ledger) async throws -> Void) async throws {
        let (first, second, close) = try await backend.openTwo()
        do {
            try await body(first, second)
        } catch {
            try? await close()
            throw error
        }
        try await close()
    }

    /// Records `entry` with nothing to do inside the transaction.
    static func record(_ entry: HandOffEntry, in ledger: any Ledger) async throws {
        try await ledger.recordHandOff(entry) {}
    }

    /// Sets a transfer's state as an administrator would.
    static func set(_ id: String, to state: TransferState, at date: Date, in ledger: any Ledger) async throws {
        let event = AuditEvent(at: date, actor: "admin:root", action: "test.state", transferId: id)
        let before = try await ledger.changeTransfer(id: id, event: event) { _ in .setState(state) }
        #expect(before != nil)
    }

    /// `details` as the audit log documents it: a JSON object with sorted keys, as `JSONEncoder` writes it with
    /// `.sortedKeys` and `.withoutEscapingSlashes` (an oracle independent of the ledger's own writer).
    static func json(_ details: [String: String]) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(details), as: UTF8.self)
    }

    /// An entry's details, parsed.
    static func details(_ entry: AuditEntry) throws -> [String: String] {
        try JSONDecoder().decode([String: String].self, from: Data(entry.details.utf8))
    }

    /// The chain is intact: ids 1, 2, 3, …, each entry linked to the one before and carrying its own hash.
    static func expectIntactChain(_ entries: [AuditEntry], sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(entries.map(\.id) == (0..<entries.count).map { Int64($0 + 1) }, sourceLocation: sourceLocation)
        var previous = AuditEntry.genesisHash
        for entry in entries {
            #expect(entry.previousHash == previous, "entry \(entry.id ?? 0) is not linked to its predecessor", sourceLocation: sourceLocation)
            #expect(entry.computedHash() == entry.hash, "entry \(entry.id ?? 0) does not carry its own hash", sourceLocation: sourceLocation)
            previous = entry.hash
        }
    }

    /// A refusal thrown from the closures the ledger runs inside its transactions.
    struct Refusal: Error, Equatable {}

    /// What closures run inside a transaction saw, safe to update from any thread.
    final class Observed<Value: Sendable>: Sendable {
        private let storage: Mutex<[Value]>
        init() { self.storage = Mutex([]) }
        func append(_ value: Value) { self.storage.withLock { $0.append(value) } }
        var values: [Value] { self.storage.withLock { $0 } }
    }

    // MARK: Reads on an empty ledger

    @Test(arguments: LedgerBackend.available)
    func emptyLedgerHasASchemaAndNothingElse(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            #expect(try await !ledger.schemaVersion().isEmpty)
            #expect(try await ledger.transfer(id: "nothing") == nil)
            #expect(try await ledger.transfer(inSlot: "slot/nothing.txt") == nil)
            #expect(try await ledger.cachedVerdict(sha256: Self.digest(1), signatureVersion: "sigs-27001") == nil)
            #expect(try await ledger.transfers(TransferFilter()).isEmpty)
            #expect(try await ledger.transfers(inStates: TransferState.allCases).isEmpty)
            #expect(try await ledger.purgeCandidates(cleanBefore: Self.at(minutes: 100), quarantineBefore: Self.at(minutes: 100)).isEmpty)
            #expect(try await ledger.detail(id: "nothing") == nil)
            #expect(try await ledger.auditEntries(transferId: nil, limit: nil).isEmpty)
            let chain = try await ledger.auditChain()
            #expect(chain.entries.isEmpty)
            #expect(chain.transfersWithoutCreation.isEmpty)
            #expect(try await !ledger.consumeToken(id: "never-issued", at: Self.at(minutes: 1)))
        }
    }

    // MARK: recordHandOff

    @Test(arguments: LedgerBackend.available)
    func handOffWritesEveryRow(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let entry = Self.handOff(
                "clean-1",
                recipients: ["bob@example.org", "carol@example.org"],
                created: Self.at(milliseconds: 1_234),
                slot: "3f9a/report.pdf",
                cacheVerdict: true
            )
            let ran = Observed<Bool>()
            try await ledger.recordHandOff(entry) { ran.append(true) }
            #expect(ran.values == [true])

            let (transfer, recipients) = try #require(try await ledger.transfer(id: "clean-1"))
            #expect(transfer.toTheMillisecond == entry.transfer)
            #expect(recipients == ["bob@example.org", "carol@example.org"])
            #expect(try await ledger.transfer(inSlot: "3f9a/report.pdf")?.toTheMillisecond == entry.transfer)
            #expect(try await ledger.transfer(inSlot: "3f9a/other.pdf") == nil)

            let cached = try await ledger.cachedVerdict(sha256: entry.transfer.sha256, signatureVersion: "sigs-27001")
            #expect(
                cached?.toTheMillisecond
                    == VerdictCacheRecord(
                        sha256: entry.transfer.sha256,
                        signatureVersion: "sigs-27001",
                        detectedType: "application/pdf",
                        typeDescription: "PDF document, version 1.7",
                        createdAt: entry.transfer.createdAt
                    )
            )

            // A local ledger answers the same on the calling thread (the in-memory hand-off asks it on a scan
            // worker); a ledger across a network has no such answer.
            switch backend {
            case .sqlite:
                let local = try #require(ledger.localVerdictCache)
                #expect(try local.cachedVerdictBlocking(sha256: entry.transfer.sha256, signatureVersion: "sigs-27001") == cached)
                #expect(try local.cachedVerdictBlocking(sha256: entry.transfer.sha256, signatureVersion: "sigs-27002") == nil)
                #expect(try local.cachedVerdictBlocking(sha256: Self.digest(77), signatureVersion: "sigs-27001") == nil)
            case .postgresql:
                #expect(ledger.localVerdictCache == nil)
            }

            // The issuances were written: each token can be used exactly once.
            for issuance in entry.issuances {
                #expect(try await ledger.consumeToken(id: issuance.tokenId, at: Self.at(minutes: 5)))
            }

            let chain = try await ledger.auditChain()
            #expect(chain.transfersWithoutCreation.isEmpty)
            let created = try #require(chain.entries.first)
            #expect(chain.entries.count == 1)
            #expect(created.action == "transfer.created")
            #expect(created.actor == "server:prosody")
            #expect(created.transferId == "clean-1")
            #expect(created.at.toTheMillisecond == entry.transfer.createdAt)
            #expect(try Self.details(created) == entry.auditDetails)
            #expect(try Self.details(created)["slot"] == "3f9a/report.pdf")
            #expect(created.details == (try Self.json(entry.auditDetails)))
            Self.expectIntactChain(chain.entries)
        }
    }

    @Test(arguments: LedgerBackend.available)
    func quarantinedHandOffWithoutCacheOrSlot(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let entry = Self.handOff("infected-1", verdict: .infected(signature: "Eicar-Test-Signature"), created: Self.at(minutes: 2))
            try await Self.record(entry, in: ledger)

            let (transfer, recipients) = try #require(try await ledger.transfer(id: "infected-1"))
            #expect(transfer.toTheMillisecond == entry.transfer)
            #expect(transfer.state == .quarantined)
            #expect(transfer.fullVerdict == .infected(signature: "Eicar-Test-Signature"))
            #expect(recipients == ["bob@example.org"])
            #expect(try await ledger.cachedVerdict(sha256: entry.transfer.sha256, signatureVersion: "sigs-27001") == nil)

            let entries = try await ledger.auditEntries(transferId: "infected-1", limit: nil)
            #expect(entries.count == 1)
            let details = try Self.details(try #require(entries.first))
            #expect(details == entry.auditDetails)
            #expect(details["signature"] == "Eicar-Test-Signature")
            #expect(details["state"] == "quarantined")
            #expect(details["slot"] == nil)
        }
    }

    @Test(arguments: LedgerBackend.available)
    func cleanHandOffWithoutCacheVerdictCachesNothing(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let entry = Self.handOff("clean-cached-before", cacheVerdict: false)
            try await Self.record(entry, in: ledger)
            #expect(try await ledger.transfer(id: "clean-cached-before") != nil)
            #expect(try await ledger.cachedVerdict(sha256: entry.transfer.sha256, signatureVersion: "sigs-27001") == nil)
        }
    }

    @Test(arguments: LedgerBackend.available)
    func throwingInTransactionWritesNothing(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let entry = Self.handOff("refused-1", slot: "a1/refused.pdf", cacheVerdict: true)
            await #expect(throws: Refusal()) {
                try await ledger.recordHandOff(entry) { throw Refusal() }
            }
            #expect(try await ledger.transfer(id: "refused-1") == nil)
            #expect(try await ledger.transfer(inSlot: "a1/refused.pdf") == nil)
            #expect(try await ledger.cachedVerdict(sha256: entry.transfer.sha256, signatureVersion: "sigs-27001") == nil)
            #expect(try await ledger.transfers(TransferFilter()).isEmpty)
            #expect(try await ledger.auditChain().entries.isEmpty)
            let token = try #require(entry.issuances.first).tokenId
            #expect(try await !ledger.consumeToken(id: token, at: Self.at(minutes: 1)))

            // The slot is still free afterwards.
            try await Self.record(entry, in: ledger)
            #expect(try await ledger.transfer(inSlot: "a1/refused.pdf")?.id == "refused-1")
            Self.expectIntactChain(try await ledger.auditChain().entries)
        }
    }

    @Test(arguments: LedgerBackend.available)
    func secondHandOffIntoATakenSlotThrowsAndWritesNothing(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let first = Self.handOff("slot-first", sha256: Self.digest(1), slot: "b2/photo.jpg", cacheVerdict: true)
            let second = Self.handOff(
                "slot-second",
                recipients: ["dave@example.org"],
                sha256: Self.digest(2),
                created: Self.at(minutes: 1),
                slot: "b2/photo.jpg",
                cacheVerdict: true
            )
            try await Self.record(first, in: ledger)
            await #expect(throws: BrokerError.slotTaken("b2/photo.jpg")) {
                try await Self.record(second, in: ledger)
            }
            #expect(try await ledger.transfer(inSlot: "b2/photo.jpg")?.id == "slot-first")
            #expect(try await ledger.transfer(id: "slot-second") == nil)
            #expect(try await ledger.cachedVerdict(sha256: Self.digest(2), signatureVersion: "sigs-27001") == nil)
            let token = try #require(second.issuances.first).tokenId
            #expect(try await !ledger.consumeToken(id: token, at: Self.at(minutes: 2)))
            let entries = try await ledger.auditChain().entries
            #expect(entries.map(\.transferId) == ["slot-first"])
        }
    }

    @Test(arguments: LedgerBackend.available)
    func concurrentHandOffsIntoOneSlotLetExactlyOneWin(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let contenders = 8
            let outcomes = Observed<String>()
            await withTaskGroup(of: Void.self) { group in
                for index in 0..<contenders {
                    group.addTask {
                        let entry = Self.handOff(
                            "race-\(index)",
                            sha256: Self.digest(100 + index),
                            created: Self.at(milliseconds: Int64(index)),
                            slot: "c3/race.bin",
                            cacheVerdict: true
                        )
                        do {
                            try await Self.record(entry, in: ledger)
                            outcomes.append("won:race-\(index)")
                        } catch BrokerError.slotTaken(let slot) {
                            outcomes.append("taken:\(slot)")
                        } catch {
                            outcomes.append("error:\(error)")
                        }
                    }
                }
            }
            let won = outcomes.values.filter { $0.hasPrefix("won:") }
            #expect(won.count == 1)
            #expect(outcomes.values.filter { $0 == "taken:c3/race.bin" }.count == contenders - 1, "\(outcomes.values)")
            let winner = try #require(won.first.map { String($0.dropFirst("won:".count)) })
            #expect(try await ledger.transfer(inSlot: "c3/race.bin")?.id == winner)
            #expect(try await ledger.transfers(TransferFilter()).map(\.record.id) == [winner])
            let chain = try await ledger.auditChain()
            #expect(chain.entries.map(\.transferId) == [winner])
            Self.expectIntactChain(chain.entries)
        }
    }

    @Test(arguments: LedgerBackend.available)
    func datesAreKeptToTheMillisecond(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let base = Self.at(minutes: 1).timeIntervalSince1970
            func near(_ read: Date?, _ expected: Date) -> Bool {
                guard let read else { return false }
                return abs(read.timeIntervalSince1970 - expected.timeIntervalSince1970) < 0.000_01
            }
            var entry = Self.handOff("ms1", created: Date(timeIntervalSince1970: base + 0.000_4), cacheVerdict: true)
            entry.transfer.updatedAt = Date(timeIntervalSince1970: base + 0.000_6)
            try await Self.record(entry, in: ledger)
            try await ledger.recordDownload(
                DownloadRecord(
                    transferId: "ms1",
                    recipient: nil,
                    at: Date(timeIntervalSince1970: base + 2.999_6),
                    remoteAddress: nil,
                    bytes: 1,
                    status: 200
                )
            )
            try await ledger.appendAudit(
                AuditEvent(at: Date(timeIntervalSince1970: base + 5.000_49), actor: "admin:root", action: "audit.anchor", transferId: nil)
            )

            let read = try #require(try await ledger.transfer(id: "ms1")?.0)
            #expect(near(read.createdAt, Self.at(milliseconds: 60_000)), "\(read.createdAt.timeIntervalSince1970)")
            #expect(near(read.updatedAt, Self.at(milliseconds: 60_001)), "\(read.updatedAt.timeIntervalSince1970)")
            let cached = try await ledger.cachedVerdict(sha256: entry.transfer.sha256, signatureVersion: "sigs-27001")
            #expect(near(cached?.createdAt, Self.at(milliseconds: 60_000)))
            #expect(near(try await ledger.detail(id: "ms1")?.downloads.first?.at, Self.at(milliseconds: 63_000)))
            let entries = try await ledger.auditChain().entries
            #expect(near(entries.first?.at, Self.at(milliseconds: 60_000)))
            #expect(near(entries.last?.at, Self.at(milliseconds: 65_000)))
            Self.expectIntactChain(entries)
        }
    }

    // MARK: Reads

    @Test(arguments: LedgerBackend.available)
    func aScannerFailureIsRememberedForTheContentBesideCleanVerdicts(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let crash = Verdict.unscannable(reason: "the scanner crashed while parsing this file")
            var entry = Self.handOff("crasher", verdict: crash, sha256: Self.digest(9), cacheVerdict: true)
            entry.transfer.detectedType = nil
            entry.transfer.typeDescription = nil
            try await Self.record(entry, in: ledger)
            let cached = try await ledger.cachedVerdict(sha256: Self.digest(9), signatureVersion: "sigs-27001")
            #expect(cached?.scannerFailure == "the scanner crashed while parsing this file")
            #expect(cached?.detectedType == "")
            // A clean verdict has none, and an unclean verdict without the cache decision writes no row.
            try await Self.record(Self.handOff("clean", sha256: Self.digest(10), cacheVerdict: true), in: ledger)
            let clean = try await ledger.cachedVerdict(sha256: Self.digest(10), signatureVersion: "sigs-27001")
            #expect(clean != nil && clean?.scannerFailure == nil)
            try await Self.record(Self.handOff("infected", verdict: .infected(signature: "Eicar"), sha256: Self.digest(11)), in: ledger)
            #expect(try await ledger.cachedVerdict(sha256: Self.digest(11), signatureVersion: "sigs-27001") == nil)
            // And it travels with `ledger copy`.
            let snapshot = try await ledger.exportSnapshot()
            #expect(snapshot.verdictCache.contains { $0.sha256 == Self.digest(9) && $0.scannerFailure == crash.reason })
        }
    }

    @Test(arguments: LedgerBackend.available)
    func cachedVerdictIsKeyedBySha256AndSignatureVersion(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            try await Self.record(Self.handOff("v1", sha256: Self.digest(7), signatureVersion: "sigs-1", cacheVerdict: true), in: ledger)
            try await Self.record(
                Self.handOff("v2", sha256: Self.digest(7), signatureVersion: "sigs-2", created: Self.at(minutes: 1), cacheVerdict: true),
                in: ledger
            )
            #expect(
                try await ledger.cachedVerdict(sha256: Self.digest(7), signatureVersion: "sigs-1")?.createdAt.toTheMillisecond == Self.at(minutes: 0)
            )
            #expect(
                try await ledger.cachedVerdict(sha256: Self.digest(7), signatureVersion: "sigs-2")?.createdAt.toTheMillisecond == Self.at(minutes: 1)
            )
            #expect(try await ledger.cachedVerdict(sha256: Self.digest(7), signatureVersion: "sigs-3") == nil)
            #expect(try await ledger.cachedVerdict(sha256: Self.digest(8), signatureVersion: "sigs-1") == nil)
        }
    }

    /// Four transfers: t1 alice→bob,carol clean (minute 1); t2 alice→dave infected (2); t3 erin→bob clean, then
    /// released (3); t4 erin→carol blocked (4).
    static func recordFourTransfers(in ledger: any Ledger) async throws {
        try await Self.record(Self.handOff("t1", recipients: ["bob@example.org", "carol@example.org"], created: Self.at(minutes: 1)), in: ledger)
        try await Self.record(
            Self.handOff("t2", verdict: .infected(signature: "Win.Test"), recipients: ["dave@example.org"], created: Self.at(minutes: 2)),
            in: ledger
        )
        try await Self.record(
            Self.handOff("t3", verdict: .unscannable(reason: "encrypted"), sender: "erin@example.org", created: Self.at(minutes: 3)),
            in: ledger
        )
        try await Self.set("t3", to: .released, at: Self.at(minutes: 10), in: ledger)
        try await Self.record(
            Self.handOff(
                "t4",
                verdict: .blocked(reason: "type not allowed"),
                sender: "erin@example.org",
                recipients: ["carol@example.org"],
                created: Self.at(minutes: 4)
            ),
            in: ledger
        )
    }

    @Test(arguments: LedgerBackend.available)
    func transfersFilterByEachFieldNewestFirst(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            try await Self.recordFourTransfers(in: ledger)
            func ids(_ filter: TransferFilter) async throws -> [String] {
                try await ledger.transfers(filter).map(\.record.id)
            }
            #expect(try await ids(TransferFilter()) == ["t4", "t3", "t2", "t1"])
            #expect(try await ids(TransferFilter(sender: "alice@example.org")) == ["t2", "t1"])
            #expect(try await ids(TransferFilter(sender: "nobody@example.org")) == [])
            #expect(try await ids(TransferFilter(recipient: "bob@example.org")) == ["t3", "t1"])
            #expect(try await ids(TransferFilter(recipient: "carol@example.org")) == ["t4", "t1"])
            #expect(try await ids(TransferFilter(since: Self.at(minutes: 2))) == ["t4", "t3", "t2"], "since is inclusive")
            #expect(try await ids(TransferFilter(since: Self.at(milliseconds: 2 * 60_000 + 1))) == ["t4", "t3"])
            #expect(try await ids(TransferFilter(verdict: .infected)) == ["t2"])
            #expect(try await ids(TransferFilter(verdict: .blocked)) == ["t4"])
            #expect(try await ids(TransferFilter(verdict: .clean)) == ["t1"])
            #expect(try await ids(TransferFilter(states: [.quarantined])) == ["t4", "t2"])
            #expect(try await ids(TransferFilter(states: [.stored, .released])) == ["t3", "t1"])
            #expect(try await ids(TransferFilter(states: [.deleted])) == [])
            #expect(try await ids(TransferFilter(limit: 2)) == ["t4", "t3"])
            #expect(try await ids(TransferFilter(limit: 1)) == ["t4"])
            #expect(try await ids(TransferFilter(sender: "erin@example.org", states: [.quarantined])) == ["t4"])
            #expect(try await ids(TransferFilter(recipient: "carol@example.org", since: Self.at(minutes: 2), limit: 5)) == ["t4"])

            // A summary carries every recipient, even when filtered by one of them, and the row as it is now.
            let byBob = try await ledger.transfers(TransferFilter(recipient: "bob@example.org"))
            #expect(byBob.map(\.recipients) == [["bob@example.org"], ["bob@example.org", "carol@example.org"]])
            let released = try #require(byBob.first?.record)
            #expect(released.state == .released)
            #expect(released.updatedAt.toTheMillisecond == Self.at(minutes: 10))
            #expect(released.createdAt.toTheMillisecond == Self.at(minutes: 3))
            #expect(released.fullVerdict == .unscannable(reason: "encrypted"))
        }
    }

    @Test(arguments: LedgerBackend.available)
    func transfersInStatesOldestFirst(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            try await Self.recordFourTransfers(in: ledger)
            #expect(try await ledger.transfers(inStates: [.quarantined]).map(\.id) == ["t2", "t4"])
            #expect(try await ledger.transfers(inStates: [.stored, .released]).map(\.id) == ["t1", "t3"])
            #expect(try await ledger.transfers(inStates: TransferState.allCases).map(\.id) == ["t1", "t2", "t3", "t4"])
            #expect(try await ledger.transfers(inStates: [.purged]).isEmpty)
            #expect(try await ledger.transfers(inStates: []).isEmpty)
        }
    }

    @Test(arguments: LedgerBackend.available)
    func purgeCandidatesUseOneCutoffPerState(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            // Clean cutoff at minute 10, quarantine cutoff at minute 5: "before" is strict.
            let fixtures: [(String, Verdict, TransferState?, Int64)] = [
                ("stored-old", .clean, nil, 1),
                ("quarantined-old", .infected(signature: "X"), nil, 2),
                ("released-old", .infected(signature: "Y"), .released, 3),
                ("deleted-old", .clean, .deleted, 4),
                ("quarantined-at-cutoff", .infected(signature: "Z"), nil, 5),
                ("quarantined-mid", .blocked(reason: "type"), nil, 6),
                ("purged-old", .clean, .purged, 7),
                ("stored-at-cutoff", .clean, nil, 10),
                ("released-new", .unscannable(reason: "limits"), .released, 11),
                ("stored-new", .clean, nil, 12),
            ]
            for (id, verdict, state, minute) in fixtures {
                try await Self.record(Self.handOff(id, verdict: verdict, created: Self.at(minutes: minute)), in: ledger)
                if let state { try await Self.set(id, to: state, at: Self.at(minutes: 60), in: ledger) }
            }
            let candidates = try await ledger.purgeCandidates(cleanBefore: Self.at(minutes: 10), quarantineBefore: Self.at(minutes: 5))
            #expect(candidates.map(\.id) == ["stored-old", "quarantined-old", "released-old"])

            let later = try await ledger.purgeCandidates(cleanBefore: Self.at(minutes: 100), quarantineBefore: Self.at(minutes: 7))
            #expect(
                later.map(\.id) == [
                    "stored-old", "quarantined-old", "released-old", "quarantined-at-cutoff", "quarantined-mid", "stored-at-cutoff",
                    "released-new", "stored-new",
                ]
            )
            let quarantineOnly = try await ledger.purgeCandidates(cleanBefore: Self.at(minutes: 0), quarantineBefore: Self.at(minutes: 100))
            #expect(quarantineOnly.map(\.id) == ["quarantined-old", "quarantined-at-cutoff", "quarantined-mid"])
        }
    }

    @Test(arguments: LedgerBackend.available)
    func detailHasRecipientsAuditAndDownloadsOldestFirst(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let entry = Self.handOff("d1", recipients: ["bob@example.org", "carol@example.org"], created: Self.at(minutes: 1))
            try await Self.record(entry, in: ledger)
            try await Self.record(Self.handOff("d2", created: Self.at(minutes: 2)), in: ledger)
            let downloads = [
                DownloadRecord(
                    transferId: "d1",
                    recipient: "carol@example.org",
                    at: Self.at(minutes: 3),
                    remoteAddress: "192.0.2.7",
                    bytes: 48_213,
                    status: 200
                ),
                DownloadRecord(transferId: "d2", recipient: "bob@example.org", at: Self.at(minutes: 4), remoteAddress: nil, bytes: 0, status: 410),
                DownloadRecord(transferId: "d1", recipient: nil, at: Self.at(minutes: 5), remoteAddress: "2001:db8::1", bytes: 1_024, status: 206),
            ]
            for download in downloads { try await ledger.recordDownload(download) }
            try await ledger.appendAudit(
                AuditEvent(at: Self.at(minutes: 6), actor: "admin:root", action: "transfer.inspected", transferId: "d1", details: ["why": "report"])
            )

            let detail = try #require(try await ledger.detail(id: "d1"))
            #expect(detail.summary.record.toTheMillisecond == entry.transfer)
            #expect(detail.summary == TransferSummary(record: detail.summary.record, recipients: ["bob@example.org", "carol@example.org"]))
            #expect(detail.audit.map(\.action) == ["transfer.created", "transfer.inspected"])
            #expect(detail.audit.allSatisfy { $0.transferId == "d1" })
            let read = detail.downloads.map { download -> DownloadRecord in
                var download = download
                download.id = nil
                download.at = download.at.toTheMillisecond
                return download
            }
            #expect(read == [downloads[0], downloads[2]])
            #expect(try await ledger.detail(id: "d2")?.downloads.map(\.status) == [410])
            #expect(try await ledger.detail(id: "d3") == nil)
        }
    }

    @Test(arguments: LedgerBackend.available)
    func auditEntriesOldestFirstWithTransferAndLimit(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            try await Self.record(Self.handOff("a1", created: Self.at(minutes: 1)), in: ledger)  // 1
            try await Self.record(Self.handOff("a2", created: Self.at(minutes: 2)), in: ledger)  // 2
            try await ledger.appendAudit(AuditEvent(at: Self.at(minutes: 3), actor: "admin:root", action: "audit.anchor", transferId: nil))  // 3
            try await Self.set("a1", to: .deleted, at: Self.at(minutes: 4), in: ledger)  // 4
            try await ledger.appendAudit(AuditEvent(at: Self.at(minutes: 5), actor: "admin:root", action: "token.issued", transferId: "a2"))  // 5

            func ids(_ transferId: String?, _ limit: Int?) async throws -> [Int64?] {
                try await ledger.auditEntries(transferId: transferId, limit: limit).map(\.id)
            }
            #expect(try await ids(nil, nil) == [1, 2, 3, 4, 5])
            #expect(try await ids("a1", nil) == [1, 4])
            #expect(try await ids("a2", nil) == [2, 5])
            #expect(try await ids(nil, 2) == [4, 5])
            #expect(try await ids(nil, 1) == [5])
            #expect(try await ids(nil, 10) == [1, 2, 3, 4, 5])
            #expect(try await ids("a2", 1) == [5])
            #expect(try await ids("a1", 5) == [1, 4])
            #expect(try await ids("unknown", nil) == [])
            let all = try await ledger.auditEntries(transferId: nil, limit: nil)
            #expect(all.map(\.at.toTheMillisecond) == (Int64(1)...5).map { Self.at(minutes: $0) })
            #expect(try await ledger.auditChain().entries == all)
        }
    }

    // MARK: Tokens and downloads

    @Test(arguments: LedgerBackend.available)
    func issuanceWithAndWithoutAuditThenSingleUse(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            try await Self.record(Self.handOff("i1", recipients: [], created: Self.at(minutes: 1)), in: ledger)
            let quiet = TokenIssuanceRecord(
                tokenId: "tok-quiet",
                transferId: "i1",
                recipient: "bob@example.org",
                keyId: "k1",
                issuedAt: Self.at(minutes: 2),
                expiresAt: Self.at(minutes: 62),
                usedAt: nil
            )
            try await ledger.recordIssuance(quiet, audit: nil)
            #expect(try await ledger.auditChain().entries.count == 1)

            var loud = quiet
            loud.tokenId = "tok-loud"
            loud.recipient = "carol@example.org"
            let event = AuditEvent(
                at: Self.at(minutes: 3),
                actor: "admin:root",
                action: "token.issued",
                transferId: "i1",
                details: ["recipient": "carol@example.org", "expires": "2026-11-22T15:03:09Z"]
            )
            try await ledger.recordIssuance(loud, audit: event)
            let entries = try await ledger.auditChain().entries
            #expect(entries.count == 2)
            let issued = try #require(entries.last)
            #expect(issued.action == "token.issued")
            #expect(issued.actor == "admin:root")
            #expect(issued.transferId == "i1")
            #expect(issued.at.toTheMillisecond == Self.at(minutes: 3))
            #expect(try Self.details(issued) == event.details)
            Self.expectIntactChain(entries)

            for token in ["tok-quiet", "tok-loud"] {
                #expect(try await ledger.consumeToken(id: token, at: Self.at(minutes: 4)), "\(token) is fresh")
                #expect(try await !ledger.consumeToken(id: token, at: Self.at(minutes: 5)), "\(token) was used")
            }
            #expect(try await !ledger.consumeToken(id: "tok-unknown", at: Self.at(minutes: 5)))
        }
    }

    @Test(arguments: LedgerBackend.available)
    func concurrentConsumersOfOneTokenLetExactlyOneThrough(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let entry = Self.handOff("c1", recipients: ["bob@example.org"])
            try await Self.record(entry, in: ledger)
            let tokenId = try #require(entry.issuances.first).tokenId
            let results = try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<20 {
                    group.addTask { try await ledger.consumeToken(id: tokenId, at: Self.at(milliseconds: Int64(index))) }
                }
                return try await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(results.count == 20)
            #expect(results.filter { $0 }.count == 1)
        }
    }

    // MARK: The audit chain

    @Test(arguments: LedgerBackend.available)
    func appendAuditChainsEntriesWithSortedJSONDetails(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let events = [
                AuditEvent(at: Self.at(milliseconds: 1), actor: "admin:alice", action: "audit.anchor", transferId: nil),
                AuditEvent(
                    at: Self.at(milliseconds: 2),
                    actor: "admin:alice",
                    action: "transfer.deleted",
                    transferId: "no-such-transfer",
                    details: ["reason": "asked by \"bob\" / légal\nline two", "b": "2", "a": "1", "path": "/srv/airlock"]
                ),
                AuditEvent(
                    at: Self.at(milliseconds: 3_999),
                    actor: "server:prosody",
                    action: "quarantine.released",
                    transferId: "x",
                    details: ["n": "3"]
                ),
            ]
            for event in events { try await ledger.appendAudit(event) }
            let entries = try await ledger.auditChain().entries
            #expect(entries.count == 3)
            for (entry, event) in zip(entries, events) {
                #expect(entry.at.toTheMillisecond == event.at)
                #expect(entry.actor == event.actor)
                #expect(entry.action == event.action)
                #expect(entry.transferId == event.transferId)
                #expect(entry.details == (try Self.json(event.details)))
                #expect(try Self.details(entry) == event.details)
            }
            #expect(entries.first?.details == "{}")
            #expect(entries.first?.previousHash == AuditEntry.genesisHash)
            Self.expectIntactChain(entries)
        }
    }

    @Test(arguments: LedgerBackend.available)
    func manyConcurrentWritersKeepTheChainIntact(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let writers = 50
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<writers {
                    group.addTask {
                        switch index % 3 {
                        case 0:
                            let entry = Self.handOff("w\(index)", sha256: Self.digest(index), created: Self.at(milliseconds: Int64(index)))
                            try await Self.record(entry, in: ledger)
                        case 1:
                            let event = AuditEvent(
                                at: Self.at(milliseconds: Int64(index)),
                                actor: "admin:root",
                                action: "test.concurrent",
                                transferId: nil,
                                details: ["writer": String(index)]
                            )
                            try await ledger.appendAudit(event)
                        default:
                            let entry = Self.handOff(
                                "w\(index)",
                                verdict: .infected(signature: "Sig.\(index)"),
                                sha256: Self.digest(index),
                                created: Self.at(milliseconds: Int64(index)),
                                slot: "w/\(index).bin"
                            )
                            try await Self.record(entry, in: ledger)
                        }
                    }
                }
                try await group.waitForAll()
            }
            let chain = try await ledger.auditChain()
            #expect(chain.entries.count == writers)
            Self.expectIntactChain(chain.entries)
            #expect(chain.transfersWithoutCreation.isEmpty)
            let created = Set(chain.entries.filter { $0.action == "transfer.created" }.compactMap(\.transferId))
            let handOffs = Set((0..<writers).filter { $0 % 3 != 1 }.map { "w\($0)" })
            #expect(created == handOffs)
            let appended = Set(try chain.entries.filter { $0.action == "test.concurrent" }.compactMap { try Self.details($0)["writer"] })
            #expect(appended == Set((0..<writers).filter { $0 % 3 == 1 }.map { String($0) }))
            #expect(try await ledger.transfers(TransferFilter(limit: 1_000)).count == handOffs.count)
        }
    }

    // MARK: changeTransfer

    @Test(arguments: LedgerBackend.available)
    func setStateUpdatesTheRowAndAppendsTheEventWithThePreviousState(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let entry = Self.handOff("q1", verdict: .infected(signature: "Sig"), created: Self.at(minutes: 1))
            try await Self.record(entry, in: ledger)
            let event = AuditEvent(
                at: Self.at(minutes: 7),
                actor: "admin:alice",
                action: "quarantine.released",
                transferId: "q1",
                details: ["reason": "false positive"]
            )
            let seen = Observed<TransferRecord>()
            let before = try await ledger.changeTransfer(id: "q1", event: event) { current in
                seen.append(current)
                return .setState(.released)
            }
            #expect(before?.toTheMillisecond == entry.transfer)
            #expect(seen.values.map(\.toTheMillisecond) == [entry.transfer])

            let (after, _) = try #require(try await ledger.transfer(id: "q1"))
            var expected = entry.transfer
            expected.state = .released
            expected.updatedAt = Self.at(minutes: 7)
            #expect(after.toTheMillisecond == expected)

            let entries = try await ledger.auditEntries(transferId: "q1", limit: nil)
            #expect(entries.map(\.action) == ["transfer.created", "quarantine.released"])
            let released = try #require(entries.last)
            #expect(released.actor == "admin:alice")
            #expect(released.at.toTheMillisecond == Self.at(minutes: 7))
            #expect(try Self.details(released) == ["reason": "false positive", "previousState": "quarantined"])
            Self.expectIntactChain(try await ledger.auditChain().entries)

            // The next decision sees the committed state.
            let again = Observed<TransferState>()
            try await ledger.changeTransfer(id: "q1", event: event) { current in
                again.append(current.state)
                return .skip
            }
            #expect(again.values == [.released])
        }
    }

    @Test(arguments: LedgerBackend.available)
    func keepStateAppendsTheEventOnly(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let entry = Self.handOff("k1", created: Self.at(minutes: 1))
            try await Self.record(entry, in: ledger)
            let event = AuditEvent(
                at: Self.at(minutes: 3),
                actor: "admin:bob",
                action: "transfer.exported",
                transferId: "k1",
                details: ["to": "/tmp/x"]
            )
            let before = try await ledger.changeTransfer(id: "k1", event: event) { _ in .keepState }
            #expect(before?.toTheMillisecond == entry.transfer)
            #expect(try await ledger.transfer(id: "k1")?.0.toTheMillisecond == entry.transfer)
            let last = try #require(try await ledger.auditEntries(transferId: "k1", limit: 1).first)
            #expect(last.action == "transfer.exported")
            #expect(try Self.details(last) == ["to": "/tmp/x"])
        }
    }

    @Test(arguments: LedgerBackend.available)
    func skipAndUnknownIdsWriteNothing(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let entry = Self.handOff("s1", created: Self.at(minutes: 1))
            try await Self.record(entry, in: ledger)
            let event = AuditEvent(at: Self.at(minutes: 3), actor: "admin:bob", action: "transfer.deleted", transferId: "s1")
            #expect(try await ledger.changeTransfer(id: "s1", event: event) { _ in .skip } == nil)
            #expect(try await ledger.changeTransfer(id: "unknown", event: event) { _ in .setState(.deleted) } == nil)
            #expect(try await ledger.transfer(id: "s1")?.0.toTheMillisecond == entry.transfer)
            #expect(try await ledger.transfer(id: "unknown") == nil)
            #expect(try await ledger.auditChain().entries.count == 1)
        }
    }

    @Test(arguments: LedgerBackend.available)
    func throwingDecisionChangesNothing(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let entry = Self.handOff("r1", verdict: .infected(signature: "Sig"), created: Self.at(minutes: 1))
            try await Self.record(entry, in: ledger)
            let event = AuditEvent(at: Self.at(minutes: 3), actor: "admin:bob", action: "quarantine.released", transferId: "r1")
            await #expect(throws: Refusal()) {
                try await ledger.changeTransfer(id: "r1", event: event) { _ in throw Refusal() }
            }
            #expect(try await ledger.transfer(id: "r1")?.0.toTheMillisecond == entry.transfer)
            #expect(try await ledger.auditChain().entries.map(\.action) == ["transfer.created"])
        }
    }

    @Test(arguments: LedgerBackend.available)
    func concurrentChangesEachSeeTheCommittedState(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            try await Self.record(Self.handOff("cc1", created: Self.at(minutes: 1)), in: ledger)
            let seen = Observed<TransferState>()
            let results = try await withThrowingTaskGroup(of: TransferRecord?.self) { group in
                for index in 0..<10 {
                    group.addTask {
                        let event = AuditEvent(
                            at: Self.at(milliseconds: 120_000 + Int64(index)),
                            actor: "server:prosody",
                            action: "transfer.deleted",
                            transferId: "cc1",
                            details: ["by": String(index)]
                        )
                        return try await ledger.changeTransfer(id: "cc1", event: event) { current in
                            seen.append(current.state)
                            return current.state == .stored ? .setState(.deleted) : .skip
                        }
                    }
                }
                return try await group.reduce(into: [TransferRecord?]()) { $0.append($1) }
            }
            #expect(results.compactMap { $0 }.map(\.state) == [.stored], "exactly one change saw the transfer stored")
            #expect(seen.values.filter { $0 == .stored }.count == 1, "\(seen.values)")
            #expect(seen.values.filter { $0 == .deleted }.count == 9, "\(seen.values)")
            #expect(try await ledger.transfer(id: "cc1")?.0.state == .deleted)
            let entries = try await ledger.auditChain().entries
            #expect(entries.map(\.action) == ["transfer.created", "transfer.deleted"])
            #expect(try Self.details(try #require(entries.last))["previousState"] == "stored")
            Self.expectIntactChain(entries)
        }
    }

    // MARK: Content locks

    @Test(arguments: LedgerBackend.available)
    func removeUnsharedContentRunsOnlyWhenNoStoredOrReleasedTransferHasIt(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            // digest(1): stored; digest(2): released; digest(3): quarantined only; digest(4): stored then deleted;
            // digest(5): nothing; digest(6): one deleted, one still stored.
            try await Self.record(Self.handOff("u1", sha256: Self.digest(1), created: Self.at(minutes: 1)), in: ledger)
            try await Self.record(
                Self.handOff("u2", verdict: .infected(signature: "S"), sha256: Self.digest(2), created: Self.at(minutes: 2)),
                in: ledger
            )
            try await Self.set("u2", to: .released, at: Self.at(minutes: 9), in: ledger)
            try await Self.record(
                Self.handOff("u3", verdict: .infected(signature: "S"), sha256: Self.digest(3), created: Self.at(minutes: 3)),
                in: ledger
            )
            try await Self.record(Self.handOff("u4", sha256: Self.digest(4), created: Self.at(minutes: 4)), in: ledger)
            try await Self.set("u4", to: .deleted, at: Self.at(minutes: 9), in: ledger)
            try await Self.record(Self.handOff("u6a", sha256: Self.digest(6), created: Self.at(minutes: 5)), in: ledger)
            try await Self.record(Self.handOff("u6b", sha256: Self.digest(6), created: Self.at(minutes: 6)), in: ledger)
            try await Self.set("u6a", to: .purged, at: Self.at(minutes: 9), in: ledger)

            let removed = Observed<Int>()
            for seed in 1...6 {
                try await ledger.removeUnsharedContent(sha256: Self.digest(seed)) { removed.append(seed) }
            }
            #expect(removed.values == [3, 4, 5])

            // A throwing removal surfaces its error and changes nothing in the ledger.
            let before = try await ledger.auditChain().entries
            let transfersBefore = try await ledger.transfers(TransferFilter())
            await #expect(throws: Refusal()) {
                try await ledger.removeUnsharedContent(sha256: Self.digest(4)) { throw Refusal() }
            }
            #expect(try await ledger.auditChain().entries == before)
            #expect(try await ledger.transfers(TransferFilter()) == transfersBefore)
        }
    }

    @Test(arguments: LedgerBackend.available)
    func withLiveContentSeesCleanHashesAndQuarantinedIds(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            try await Self.record(Self.handOff("l1", sha256: Self.digest(1), created: Self.at(minutes: 1)), in: ledger)
            try await Self.record(Self.handOff("l2", sha256: Self.digest(1), created: Self.at(minutes: 2)), in: ledger)
            try await Self.record(
                Self.handOff("l3", verdict: .infected(signature: "S"), sha256: Self.digest(2), created: Self.at(minutes: 3)),
                in: ledger
            )
            try await Self.set("l3", to: .released, at: Self.at(minutes: 9), in: ledger)
            try await Self.record(
                Self.handOff("l4", verdict: .blocked(reason: "type"), sha256: Self.digest(3), created: Self.at(minutes: 4)),
                in: ledger
            )
            try await Self.record(
                Self.handOff("l5", verdict: .infected(signature: "S"), sha256: Self.digest(4), created: Self.at(minutes: 5)),
                in: ledger
            )
            try await Self.set("l5", to: .deleted, at: Self.at(minutes: 9), in: ledger)
            try await Self.record(Self.handOff("l6", sha256: Self.digest(5), created: Self.at(minutes: 6)), in: ledger)
            try await Self.set("l6", to: .purged, at: Self.at(minutes: 9), in: ledger)

            let live = try await ledger.withLiveContent { $0 }
            #expect(live.cleanHashes == [Self.digest(1), Self.digest(2)])
            #expect(live.quarantinedIds == ["l4"])
            #expect(try await ledger.withLiveContent { $0.cleanHashes.count + $0.quarantinedIds.count } == 3)
            await #expect(throws: Refusal()) {
                try await ledger.withLiveContent { _ -> Int in throw Refusal() }
            }
        }
    }
}

// The ledgers keep dates to the millisecond, and that is the promise: a date read back may differ from the stored
// millisecond by floating-point noise (SQLite's through GRDB's date decoding does, by up to 1.2e-7 s for about
// four dates in ten), so reads are compared to the millisecond. `datesAreKeptToTheMillisecond` holds the rounding.

extension Date {
    /// This instant rounded to the nearest millisecond, built as the fixtures build theirs.
    fileprivate var toTheMillisecond: Date { Date(timeIntervalSince1970: (self.timeIntervalSince1970 * 1000).rounded() / 1000) }
}

extension TransferRecord {
    /// The row with its dates rounded to the millisecond.
    fileprivate var toTheMillisecond: TransferRecord {
        var record = self
        record.createdAt = record.createdAt.toTheMillisecond
        record.updatedAt = record.updatedAt.toTheMillisecond
        return record
    }
}

extension VerdictCacheRecord {
    /// The row with its date rounded to the millisecond.
    fileprivate var toTheMillisecond: VerdictCacheRecord {
        var record = self
        record.createdAt = record.createdAt.toTheMillisecond
        return record
    }
}
