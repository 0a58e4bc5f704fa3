import Foundation
import Synchronization
import Testing

@testable import AirlockCore

/// Issue 15: what every ``Ledger`` promises the retro-scan and recall, on SQLite and PostgreSQL.
@Suite("ledger contract: retro-scan and recall")
struct RecallContractTests {
    typealias Contract = LedgerContractTests

    @Test(arguments: LedgerBackend.available)
    func candidatesAreUncheckedStoredContentOfTheWindowNewestFirst(backend: LedgerBackend) async throws {
        try await Contract().withLedger(backend) { ledger in
            // Two transfers of the same bytes, one older than the window, one quarantined, one checked already.
            try await Contract.record(Contract.handOff("a1", sha256: Contract.digest(1), created: Contract.at(minutes: 10)), in: ledger)
            try await Contract.record(Contract.handOff("a2", sha256: Contract.digest(1), created: Contract.at(minutes: 30)), in: ledger)
            try await Contract.record(Contract.handOff("b1", sha256: Contract.digest(2), created: Contract.at(minutes: 20)), in: ledger)
            try await Contract.record(Contract.handOff("old", sha256: Contract.digest(3), created: Contract.at(minutes: -120)), in: ledger)
            try await Contract.record(
                Contract.handOff("q1", verdict: .infected(signature: "X"), sha256: Contract.digest(4), created: Contract.at(minutes: 40)),
                in: ledger
            )
            try await Contract.record(Contract.handOff("c1", sha256: Contract.digest(5), created: Contract.at(minutes: 50)), in: ledger)
            let since = Contract.at(minutes: 0)
            try await ledger.recordChecked(
                VerdictCacheRecord(
                    sha256: Contract.digest(5),
                    signatureVersion: "v2",
                    detectedType: "application/pdf",
                    typeDescription: "",
                    createdAt: Contract.at(minutes: 60)
                )
            )

            let candidates = try await Self.claim(ledger, "v2", limit: 10, node: "node-a", since: since)
            #expect(candidates.map(\.sha256) == [Contract.digest(1), Contract.digest(2)])
            #expect(candidates.first?.newest == Contract.at(minutes: 30))
            #expect(candidates.first?.size == 48_213)
            // A node may claim again what it holds.
            #expect(try await Self.claim(ledger, "v2", limit: 1, node: "node-a", since: since).count == 1)
            // Another version has checked none of them.
            #expect(try await Self.claim(ledger, "v3", limit: 10, node: "node-a", since: since).count == 3)

            let progress = try await ledger.retroscanProgress(since: since, signatureVersion: "v2")
            #expect(progress == RetroscanProgress(checked: 1, pending: 2, recalled: 0))
        }
    }

    /// Claims as node `node` at minute 61 (after every hand-off of these tests), leased for `leaseMinutes`.
    static func claim(
        _ ledger: any Ledger,
        _ version: String,
        limit: Int,
        node: String,
        excluding handled: Set<String> = [],
        since: Date = Contract.at(minutes: 0),
        now: Date = Contract.at(minutes: 61),
        leaseMinutes: Double = 10
    ) async throws -> [RetroscanCandidate] {
        try await ledger.claimRetroscanCandidates(
            since: since,
            signatureVersion: version,
            limit: limit,
            excluding: handled,
            node: node,
            now: now,
            leaseUntil: now.addingTimeInterval(leaseMinutes * 60)
        )
    }

    @Test(arguments: LedgerBackend.available)
    func nodesSplitAPassThroughLeasesThatEndWhenCheckedOrWhenTheyRunOut(backend: LedgerBackend) async throws {
        try await Contract().withLedger(backend) { ledger in
            for index in 0..<6 {
                try await Contract.record(
                    Contract.handOff("l\(index)", sha256: Contract.digest(100 + index), created: Contract.at(minutes: Int64(10 + index))),
                    in: ledger
                )
            }
            let newestFirst = (0..<6).reversed().map { Contract.digest(100 + $0) }
            let a = try await Self.claim(ledger, "v2", limit: 2, node: "node-a")
            #expect(a.map(\.sha256) == Array(newestFirst[0..<2]))
            // Another node gets the rest, not what node-a holds.
            let b = try await Self.claim(ledger, "v2", limit: 10, node: "node-b")
            #expect(b.map(\.sha256) == Array(newestFirst[2...]))
            #expect(try await Self.claim(ledger, "v2", limit: 10, node: "node-c").isEmpty)
            // Leases are per signature version: another version's pass sees everything.
            #expect(try await Self.claim(ledger, "v3", limit: 10, node: "node-c").count == 6)
            // What a pass handled already stays out of its claims.
            let rest = try await Self.claim(ledger, "v4", limit: 2, node: "node-e", excluding: [newestFirst[0], newestFirst[2]])
            #expect(rest.map(\.sha256) == [newestFirst[1], newestFirst[3]])

            // A check takes the content out of its version's pass; node-c's v3 lease on the same content still holds.
            try await ledger.recordChecked(
                VerdictCacheRecord(
                    sha256: newestFirst[2],
                    signatureVersion: "v2",
                    detectedType: "application/octet-stream",
                    typeDescription: "",
                    createdAt: Contract.at(minutes: 62)
                )
            )
            #expect(try await Self.claim(ledger, "v2", limit: 10, node: "node-b").map(\.sha256) == Array(newestFirst[3...]))
            #expect(try await Self.claim(ledger, "v3", limit: 10, node: "node-d").isEmpty)

            // node-b dies: once its leases run out, node-a takes its contents over (node-b renewed them at minute
            // 61, so they run until 71).
            #expect(try await Self.claim(ledger, "v2", limit: 10, node: "node-a", now: Contract.at(minutes: 70)).map(\.sha256) == Array(newestFirst[0..<2]))
            let takeover = try await Self.claim(ledger, "v2", limit: 10, node: "node-a", now: Contract.at(minutes: 72))
            #expect(takeover.map(\.sha256) == newestFirst.filter { $0 != newestFirst[2] })
        }
    }

    @Test(arguments: LedgerBackend.available)
    func twoNodesClaimingAtOnceNeverCheckTheSameContent(backend: LedgerBackend) async throws {
        try await Contract().withTwoLedgers(backend) { first, second in
            let count = 60
            for index in 0..<count {
                try await Contract.record(
                    Contract.handOff("r\(index)", sha256: Contract.digest(300 + index), created: Contract.at(minutes: Int64(index % 50))),
                    in: first
                )
            }
            // Two nodes run a pass each at the same time, in small batches, as ``Retroscanner`` does.
            @Sendable func pass(_ ledger: any Ledger, _ node: String) async throws -> [String] {
                var checked: [String] = []
                while true {
                    let batch = try await Self.claim(ledger, "v2", limit: 3, node: node)
                    if batch.isEmpty { return checked }
                    for candidate in batch {
                        checked.append(candidate.sha256)
                        try await ledger.recordChecked(
                            VerdictCacheRecord(
                                sha256: candidate.sha256,
                                signatureVersion: "v2",
                                detectedType: "application/octet-stream",
                                typeDescription: "",
                                createdAt: Contract.at(minutes: 61)
                            )
                        )
                    }
                }
            }
            async let one = pass(first, "node-a")
            async let two = pass(second, "node-b")
            let (a, b) = try await (one, two)
            #expect(Set(a).isDisjoint(with: b))
            #expect(a.count + b.count == count)
            #expect(Set(a + b).count == count)
            #expect(try await first.retroscanProgress(since: Contract.at(minutes: 0), signatureVersion: "v2").pending == 0)
        }
    }

    @Test(arguments: LedgerBackend.available)
    func recallQuarantinesEveryStoredTransferOfTheContentAndNamesWhoDownloadedIt(backend: LedgerBackend) async throws {
        try await Contract().withLedger(backend) { ledger in
            let bad = Contract.digest(7)
            try await Contract.record(
                Contract.handOff("r1", recipients: ["bob@example.org", "carol@example.org"], sha256: bad, cacheVerdict: true),
                in: ledger
            )
            try await Contract.record(
                Contract.handOff("r2", recipients: ["dave@example.org"], sha256: bad, created: Contract.at(minutes: 5)),
                in: ledger
            )
            try await Contract.record(Contract.handOff("other", sha256: Contract.digest(8)), in: ledger)
            try await Contract.set("r2", to: .released, at: Contract.at(minutes: 6), in: ledger)
            try await Contract.record(
                Contract.handOff("r3", recipients: ["erin@example.org"], sha256: bad, created: Contract.at(minutes: 7)),
                in: ledger
            )
            try await ledger.recordDownload(
                DownloadRecord(
                    transferId: "r1",
                    recipient: "bob@example.org",
                    at: Contract.at(minutes: 1),
                    remoteAddress: nil,
                    bytes: 10,
                    status: 200
                )
            )
            try await ledger.recordDownload(
                DownloadRecord(
                    transferId: "r1",
                    recipient: "carol@example.org",
                    at: Contract.at(minutes: 2),
                    remoteAddress: nil,
                    bytes: 0,
                    status: 416
                )
            )
            try await ledger.recordDownload(
                DownloadRecord(transferId: "r3", recipient: nil, at: Contract.at(minutes: 8), remoteAddress: nil, bytes: 10, status: 200)
            )
            #expect(try await ledger.cachedVerdict(sha256: bad, signatureVersion: "sigs-27001") != nil)

            let quarantined = Mutex<[String]>([])
            let recalled = try await ledger.recall(
                sha256: bad,
                verdict: .infected(signature: "Test.Recall"),
                signatureVersion: "v2",
                at: Contract.at(minutes: 60),
                actor: "airlock:retroscan"
            ) { transfer in
                quarantined.withLock { $0.append(transfer.id) }
            }

            // Stored ones only: the released one was an administrator's decision.
            #expect(recalled.map(\.transfer.id) == ["r1", "r3"])
            #expect(quarantined.withLock { $0 } == ["r1", "r3"])
            #expect(recalled.first?.downloadedBy == ["bob@example.org"])
            #expect(recalled.first?.recipients == ["bob@example.org", "carol@example.org"])
            #expect(recalled.last?.downloadedBy == ["(XEP-0363 download)"])
            let (r1, _) = try #require(try await ledger.transfer(id: "r1"))
            #expect(r1.state == .quarantined)
            #expect(r1.verdict == .infected)
            #expect(r1.signature == "Test.Recall")
            #expect(r1.signatureVersion == "v2")
            #expect(r1.recalledAt == Contract.at(minutes: 60))
            #expect(try await ledger.transfer(id: "r2")?.0.state == .released)
            #expect(try await ledger.transfer(id: "other")?.0.state == .stored)
            #expect(try await ledger.cachedVerdict(sha256: bad, signatureVersion: "sigs-27001") == nil, "the clean verdict is corrected")

            let entries = try await ledger.auditEntries(transferId: "r1", limit: nil).filter { $0.action == "transfer.recalled" }
            #expect(entries.count == 1)
            let details = try Contract.details(try #require(entries.first))
            #expect(details["downloadedBy"] == "bob@example.org")
            #expect(details["signature"] == "Test.Recall")
            #expect(details["previousState"] == "stored")
            #expect(entries.first?.actor == "airlock:retroscan")
            Contract.expectIntactChain(try await ledger.auditChain().entries)
            #expect(try await ledger.retroscanProgress(since: Contract.at(minutes: -1), signatureVersion: "v2").recalled == 2)

            // Nothing left to recall; a failing quarantine rolls back.
            #expect(
                try await ledger.recall(
                    sha256: bad,
                    verdict: .infected(signature: "T"),
                    signatureVersion: "v2",
                    at: Contract.at(minutes: 61),
                    actor: "a"
                ) { _ in }.isEmpty
            )
            await #expect(throws: Contract.Refusal.self) {
                _ = try await ledger.recall(
                    sha256: Contract.digest(8),
                    verdict: .infected(signature: "T"),
                    signatureVersion: "v2",
                    at: Contract.at(minutes: 62),
                    actor: "a"
                ) { _ in throw Contract.Refusal() }
            }
            #expect(try await ledger.transfer(id: "other")?.0.state == .stored)
            #expect(try await ledger.transfer(id: "other")?.0.recalledAt == nil)
        }
    }
}
