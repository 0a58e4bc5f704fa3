import AirlockTestSupport
import Foundation
import GRDB
import Logging
import Testing

@testable import AirlockCore

/// Quotas (issue 16): the configuration, the decision, the counts every ledger keeps, and the check inside the
/// hand-off's transaction that holds when hand-offs race, on each backend.
@Suite("quotas")
struct QuotaTests {
    typealias Contract = LedgerContractTests

    // MARK: Configuration

    private func load(_ object: [String: Any], environment: [String: String] = [:]) throws -> AirlockConfiguration {
        let data = try JSONSerialization.data(withJSONObject: ConfigurationTests.requiredSecrets.merging(object) { $1 })
        return try AirlockConfiguration.parse(data, fileName: "airlock.json", environment: environment)
    }

    @Test func quotasAreAbsentUnlessConfigured() throws {
        let configuration = try self.load([:])
        #expect(configuration.quotas == AirlockConfiguration.Quotas())
        #expect(configuration.limits.maxStoredBytes == nil)
        #expect(configuration.quotaCheck(uploader: "alice@example.org", server: "prosody") == nil)
        #expect(AirlockConfiguration.development.quotas.isEmpty)
    }

    @Test func quotasAreReadFromTheFileAndTheEnvironment() throws {
        let configuration = try self.load(
            [
                "quotas": ["perUploader": ["dailyBytes": 1000, "dailyFiles": 5], "perServer": ["totalBytes": 50_000]],
                "limits": ["maxStoredBytes": 80_000],
            ],
            environment: ["AIRLOCK_QUOTAS_PER_UPLOADER_TOTAL_BYTES": "3000", "AIRLOCK_QUOTAS_PER_SERVER_DAILY_FILES": "100"]
        )
        #expect(configuration.quotas.perUploader == .init(dailyBytes: 1000, totalBytes: 3000, dailyFiles: 5))
        #expect(configuration.quotas.perServer == .init(totalBytes: 50_000, dailyFiles: 100))
        #expect(configuration.limits.maxStoredBytes == 80_000)
        let check = try #require(configuration.quotaCheck(uploader: "alice@example.org", server: "prosody"))
        #expect(check.subjects == [QuotaSubject(.uploader, "alice@example.org"), QuotaSubject(.server, "prosody"), .global])
    }

    @Test func invalidQuotasNameTheirKey() throws {
        func error(_ object: [String: Any]) -> ConfigurationError? {
            do {
                _ = try self.load(object)
                return nil
            } catch {
                return error as? ConfigurationError
            }
        }
        #expect(error(["quotas": ["perUploader": ["dailyBytes": -1]]])?.key == "quotas.perUploader.dailyBytes")
        #expect(error(["quotas": ["perServer": ["totalBytes": "lots"]]])?.key == "quotas.perServer.totalBytes")
        #expect(error(["quotas": ["perUploader": ["dailybytes": 5]]])?.key == "quotas.perUploader.dailybytes")
        #expect(error(["limits": ["maxStoredBytes": 1.5]])?.key == "limits.maxStoredBytes")
    }

    // MARK: The decision

    /// 2026-11-22 23:59:59.500 UTC.
    static let justBeforeMidnight = Date(timeIntervalSince1970: 1_795_391_999.5)

    @Test func theFirstQuotaExceededIsNamedStoredOnesFirst() throws {
        let check = QuotaCheck(
            uploader: "alice@example.org",
            server: "prosody",
            perUploader: .init(dailyBytes: 100, totalBytes: 1000, dailyFiles: 3),
            perServer: .init(dailyBytes: 10_000),
            maxStoredBytes: 5000
        )
        let alice = QuotaSubject(.uploader, "alice@example.org")
        let now = Self.justBeforeMidnight
        // Exactly at a limit fits; one byte more does not.
        #expect(
            check.refusal(adding: 40, at: now, usage: [QuotaUsage(subject: alice, storedBytes: 40, storedFiles: 1, dayBytes: 60, dayFiles: 1)]) == nil
        )
        let daily = try #require(check.refusal(adding: 41, at: now, usage: [QuotaUsage(subject: alice, dayBytes: 60, dayFiles: 1)]))
        #expect(daily.quota == "quotas.perUploader.dailyBytes")
        #expect(daily.limit == 100)
        #expect(daily.retryAfterSeconds == 1)
        #expect(daily.description.contains("quotas.perUploader.dailyBytes"))
        #expect(
            check.refusal(adding: 0, at: now, usage: [QuotaUsage(subject: alice, dayFiles: 3)])?.quota == "quotas.perUploader.dailyFiles"
        )
        // Both a daily and a stored quota exceeded: the stored one, since waiting for the next day would not help.
        let both = try #require(check.refusal(adding: 50, at: now, usage: [QuotaUsage(subject: alice, storedBytes: 990, dayBytes: 90)]))
        #expect(both.quota == "quotas.perUploader.totalBytes")
        #expect(both.retryAfterSeconds == nil)
        let global = try #require(check.refusal(adding: 10, at: now, usage: [QuotaUsage(subject: .global, storedBytes: 4995)]))
        #expect(global.quota == "limits.maxStoredBytes")
        #expect(global.limit == 5000)
        #expect(
            check.refusal(adding: 10, at: now, usage: [QuotaUsage(subject: QuotaSubject(.server, "prosody"), dayBytes: 9995)])?.quota
                == "quotas.perServer.dailyBytes"
        )
        // Another server's or uploader's usage does not count.
        #expect(check.refusal(adding: 10, at: now, usage: [QuotaUsage(subject: QuotaSubject(.uploader, "bob@example.org"), dayBytes: 100)]) == nil)
    }

    @Test func retryAfterCountsTheSecondsUntilTheUTCDayRollsOver() {
        let midnight = Date(timeIntervalSince1970: 1_795_392_000)  // 2026-11-23 00:00:00 UTC
        #expect(QuotaDay.of(midnight) == QuotaDay.of(Self.justBeforeMidnight) + 1)
        #expect(QuotaDay.of(midnight) == 1_795_392_000 / 86_400)
        #expect(QuotaDay.secondsUntilNextDay(after: Self.justBeforeMidnight) == 1)
        #expect(QuotaDay.secondsUntilNextDay(after: midnight) == 86_400)
        #expect(QuotaDay.secondsUntilNextDay(after: midnight.addingTimeInterval(3600.25)) == 82_800)
    }

    // MARK: The ledger's counts

    /// A hand-off of `size` bytes by `sender` through `server`, checked against `quota` when given.
    static func entry(
        _ id: String,
        sender: String = "alice@example.org",
        server: String = "prosody",
        size: Int64,
        verdict: Verdict = .clean,
        created: Date = Contract.at(minutes: 0),
        quota: QuotaCheck? = nil
    ) -> HandOffEntry {
        var entry = Contract.handOff(id, verdict: verdict, sender: sender, created: created)
        entry.transfer.server = server
        entry.transfer.size = size
        entry.quota = quota
        return entry
    }

    static func day(_ date: Date = Contract.at(minutes: 0)) -> Int64 { QuotaDay.of(date) }

    @Test(arguments: LedgerBackend.available)
    func theLedgerCountsStoredBytesAndEachDaysUploads(backend: LedgerBackend) async throws {
        try await Contract().withLedger(backend) { ledger in
            let alice = QuotaSubject(.uploader, "alice@example.org")
            let bob = QuotaSubject(.uploader, "bob@example.org")
            let prosody = QuotaSubject(.server, "prosody")
            #expect(try await ledger.quotaUsage([alice], day: Self.day()).isEmpty)

            try await Contract.record(Self.entry("a1", size: 100), in: ledger)
            try await Contract.record(Self.entry("a2", size: 20, verdict: .infected(signature: "Eicar-Test-Signature")), in: ledger)
            try await Contract.record(Self.entry("b1", sender: "bob@example.org", size: 7), in: ledger)
            try await Contract.record(Self.entry("e1", sender: "carol@example.org", server: "ejabberd", size: 1), in: ledger)
            let tomorrow = Contract.at(minutes: 24 * 60)
            try await Contract.record(Self.entry("a3", size: 1000, created: tomorrow), in: ledger)

            let today = try await ledger.quotaUsage([alice, bob, prosody, .global], day: Self.day())
            #expect(
                today == [
                    QuotaUsage(subject: alice, storedBytes: 1120, storedFiles: 3, dayBytes: 120, dayFiles: 2),
                    QuotaUsage(subject: bob, storedBytes: 7, storedFiles: 1, dayBytes: 7, dayFiles: 1),
                    QuotaUsage(subject: prosody, storedBytes: 1127, storedFiles: 4, dayBytes: 127, dayFiles: 3),
                    QuotaUsage(subject: .global, storedBytes: 1128, storedFiles: 5),
                ]
            )
            #expect(try await ledger.quotaUsage([alice], day: Self.day(tomorrow)).first?.dayBytes == 1000)

            // Deleted and purged bytes are given back to what is stored, never to what the day accepted; a release
            // keeps them stored.
            try await Contract.set("a1", to: .deleted, at: Contract.at(minutes: 5), in: ledger)
            try await Contract.set("a3", to: .purged, at: Contract.at(minutes: 6), in: ledger)
            try await Contract.set("a2", to: .released, at: Contract.at(minutes: 7), in: ledger)
            try await Contract.set("a1", to: .deleted, at: Contract.at(minutes: 8), in: ledger)
            #expect(
                try await ledger.quotaUsage([alice, .global], day: Self.day()) == [
                    QuotaUsage(subject: alice, storedBytes: 20, storedFiles: 1, dayBytes: 120, dayFiles: 2),
                    QuotaUsage(subject: .global, storedBytes: 28, storedFiles: 3),
                ]
            )

            // Everything, highest stored first.
            let all = try await ledger.quotaUsage(nil, day: Self.day())
            #expect(
                all.map(\.subject) == [.global, prosody, alice, bob, QuotaSubject(.server, "ejabberd"), QuotaSubject(.uploader, "carol@example.org")]
            )
        }
    }

    @Test(arguments: LedgerBackend.available)
    func pruningRemovesOnlyTheDailyCountersOfEarlierDays(backend: LedgerBackend) async throws {
        try await Contract().withLedger(backend) { ledger in
            let alice = QuotaSubject(.uploader, "alice@example.org")
            let day = Int64(24 * 60)
            try await Contract.record(Self.entry("d0", size: 5, created: Contract.at(minutes: 0)), in: ledger)
            try await Contract.record(Self.entry("d2", size: 7, created: Contract.at(minutes: 2 * day)), in: ledger)
            try await Contract.record(Self.entry("d3", size: 11, created: Contract.at(minutes: 3 * day)), in: ledger)
            let cutoff = Self.day(Contract.at(minutes: 2 * day))
            // Day 0's counters: alice's and prosody's.
            #expect(try await ledger.pruneDailyQuotaUsage(before: cutoff, dryRun: true) == 2)
            #expect(try await ledger.quotaUsage([alice], day: Self.day()).first?.dayBytes == 5)
            #expect(try await ledger.pruneDailyQuotaUsage(before: cutoff, dryRun: false) == 2)
            #expect(try await ledger.pruneDailyQuotaUsage(before: cutoff, dryRun: true) == 0)
            #expect(try await ledger.quotaUsage([alice], day: Self.day()).first?.dayBytes == 0)
            #expect(try await ledger.quotaUsage([alice], day: cutoff).first?.dayBytes == 7)
            #expect(try await ledger.quotaUsage([alice], day: cutoff + 1).first?.dayBytes == 11)
            // What is stored is not a daily counter: untouched.
            #expect(try await ledger.quotaUsage([alice], day: cutoff).first?.storedBytes == 23)
        }
    }

    @Test(arguments: LedgerBackend.available)
    func aHandOffOverItsQuotaIsRefusedInsideTheTransactionAndWritesNothing(backend: LedgerBackend) async throws {
        try await Contract().withLedger(backend) { ledger in
            let quota = QuotaCheck(
                uploader: "alice@example.org",
                server: "prosody",
                perUploader: .init(totalBytes: 150),
                perServer: nil,
                maxStoredBytes: nil
            )
            try await Contract.record(Self.entry("a1", size: 100, quota: quota), in: ledger)
            let ran = Contract.Observed<String>()
            await #expect(throws: BrokerError.self) {
                try await ledger.recordHandOff(Self.entry("a2", size: 51, quota: quota)) { ran.append("a2") }
            }
            do {
                try await ledger.recordHandOff(Self.entry("a3", size: 60, quota: quota)) { ran.append("a3") }
                Issue.record("a hand-off over its quota was recorded")
            } catch BrokerError.quotaExceeded(let exceeded) {
                #expect(exceeded.quota == "quotas.perUploader.totalBytes")
                #expect(exceeded.limit == 150)
                #expect(exceeded.subject == "alice@example.org")
            }
            // Nothing ran inside the refused transactions (no bytes moved) and nothing was written.
            #expect(ran.values.isEmpty)
            #expect(try await ledger.transfer(id: "a2") == nil)
            #expect(try await ledger.auditEntries(transferId: nil, limit: nil).count == 1)
            // Another uploader has a quota of its own; a hand-off that exactly fills alice's passes.
            try await Contract.record(
                Self.entry(
                    "b1",
                    sender: "bob@example.org",
                    size: 150,
                    quota: QuotaCheck(
                        uploader: "bob@example.org",
                        server: "prosody",
                        perUploader: .init(totalBytes: 150),
                        perServer: nil,
                        maxStoredBytes: nil
                    )
                ),
                in: ledger
            )
            try await Contract.record(Self.entry("a4", size: 50, quota: quota), in: ledger)
            #expect(try await ledger.quotaUsage([QuotaSubject(.uploader, "alice@example.org")], day: Self.day()).first?.storedBytes == 150)
        }
    }

    @Test(arguments: LedgerBackend.available)
    func racingHandOffsForTheLastBytesOneWins(backend: LedgerBackend) async throws {
        try await Contract().withLedger(backend) { ledger in
            // 100 bytes left under each quota; eight hand-offs of 60 bytes race for them, two rounds: per uploader, then
            // against the global limit with eight different uploaders.
            let perUploader = { (_: Int) in
                QuotaCheck(uploader: "alice@example.org", server: "prosody", perUploader: .init(totalBytes: 100), perServer: nil, maxStoredBytes: nil)
            }
            let global = { (index: Int) in
                QuotaCheck(uploader: "u\(index)@example.org", server: "prosody", perUploader: nil, perServer: nil, maxStoredBytes: 160)
            }
            for (round, quota) in [perUploader, global].enumerated() {
                let outcomes = try await withThrowingTaskGroup(of: Bool.self) { group in
                    for index in 0..<8 {
                        let entry = Self.entry("r\(round)-\(index)", sender: quota(index).uploader, size: 60, quota: quota(index))
                        group.addTask {
                            do {
                                try await Contract.record(entry, in: ledger)
                                return true
                            } catch BrokerError.quotaExceeded {
                                return false
                            }
                        }
                    }
                    return try await group.reduce(into: [Bool]()) { $0.append($1) }
                }
                #expect(outcomes.filter { $0 }.count == 1, "round \(round): \(outcomes)")
            }
            #expect(try await ledger.quotaUsage([.global], day: Self.day()).first?.storedBytes == 120)
            #expect(try await ledger.transfers(TransferFilter()).count == 2)
        }
    }

    /// Two nodes, each with its own connection pool on one PostgreSQL ledger, race for the last bytes of a
    /// server's quota, each with single hand-offs and a group commit: the advisory lock per subject lets one win.
    @Test(.enabled(if: PostgresTestServer.isAvailable))
    func twoNodesOnOnePostgreSQLLedgerLetOneWin() async throws {
        let (url, drop) = try await PostgresTestServer.createDatabase()
        var logger = Logger(label: "airlock.test.postgres")
        logger.logLevel = .warning
        let settings = try AirlockConfiguration.PostgreSQL.parse(url)
        let nodeA = try await PostgresLedger.connect(settings, node: "a", logger: logger)
        let nodeB = try await PostgresLedger.connect(settings, node: "b", logger: logger)
        let quota = QuotaCheck(uploader: "unknown", server: "xep0363", perUploader: nil, perServer: .init(totalBytes: 100), maxStoredBytes: nil)
        do {
            let wins = try await withThrowingTaskGroup(of: Int.self) { group in
                for index in 0..<6 {
                    let ledger = index % 2 == 0 ? nodeA : nodeB
                    let entry = Self.entry("n\(index)", sender: "unknown", server: "xep0363", size: 60, quota: quota)
                    group.addTask {
                        if index < 4 {
                            do {
                                try await Contract.record(entry, in: ledger)
                                return 1
                            } catch BrokerError.quotaExceeded {
                                return 0
                            }
                        }
                        let outcomes = try await ledger.recordHandOffs([GroupMember(entry: entry) {}]) {}
                        return outcomes.filter { (try? $0.get()) != nil }.count
                    }
                }
                return try await group.reduce(0, +)
            }
            #expect(wins == 1)
            #expect(try await nodeB.quotaUsage([QuotaSubject(.server, "xep0363")], day: Self.day()).first?.storedBytes == 60)
            #expect(try await nodeA.transfers(TransferFilter()).count == 1)
        } catch {
            await nodeA.close()
            await nodeB.close()
            try await drop()
            throw error
        }
        await nodeA.close()
        await nodeB.close()
        try await drop()
    }

    @Test(arguments: LedgerBackend.available)
    func aGroupCommitMemberOverItsQuotaFailsAlone(backend: LedgerBackend) async throws {
        try await Contract().withLedger(backend) { ledger in
            let quota = QuotaCheck(
                uploader: "alice@example.org",
                server: "prosody",
                perUploader: .init(dailyFiles: 2),
                perServer: nil,
                maxStoredBytes: nil
            )
            let ran = Contract.Observed<String>()
            let members = (1...3).map { index in
                GroupMember(entry: Self.entry("g\(index)", size: 10, quota: quota)) { ran.append("g\(index)") }
            }
            let outcomes = try await ledger.recordHandOffs(
                members + [
                    GroupMember(
                        entry: Self.entry(
                            "b1",
                            sender: "bob@example.org",
                            size: 10,
                            quota: QuotaCheck(
                                uploader: "bob@example.org",
                                server: "prosody",
                                perUploader: .init(dailyFiles: 2),
                                perServer: nil,
                                maxStoredBytes: nil
                            )
                        )
                    ) { ran.append("b1") }
                ]
            ) {}
            #expect(outcomes.map { (try? $0.get()) != nil } == [true, true, false, true])
            if case .failure(BrokerError.quotaExceeded(let exceeded)) = outcomes[2] {
                #expect(exceeded.quota == "quotas.perUploader.dailyFiles")
                #expect(exceeded.retryAfterSeconds != nil)
            } else {
                Issue.record("the third member was not refused by its quota: \(outcomes[2])")
            }
            #expect(ran.values == ["g1", "g2", "b1"])
            #expect(try await ledger.transfer(id: "g3") == nil)
            #expect(try await ledger.quotaUsage([QuotaSubject(.uploader, "alice@example.org")], day: Self.day()).first?.dayFiles == 2)
        }
    }

    @Test(arguments: LedgerBackend.available, LedgerBackend.available)
    func usageArrivesWithALedgerCopy(from sourceBackend: LedgerBackend, to targetBackend: LedgerBackend) async throws {
        try await LedgerCopyTests.withLedgers(sourceBackend, targetBackend) { source, target in
            try await LedgerCopyTests.populate(source)
            try await Contract.record(Self.entry("x1", sender: "zoe@example.org", size: 5, created: Contract.at(minutes: 24 * 60)), in: source)
            try await target.importSnapshot(try await source.exportSnapshot()) { _, _ in }
            for day in [Self.day(), Self.day(Contract.at(minutes: 24 * 60))] {
                let copied = try await target.quotaUsage(nil, day: day)
                #expect(copied == (try await source.quotaUsage(nil, day: day)))
                #expect(copied.contains { $0.subject == QuotaSubject(.uploader, "zoe@example.org") && $0.storedBytes == 5 })
            }
        }
    }

    @Test func migrationV5CountsTheTransfersAlreadyRecorded() throws {
        let directory = try TemporaryDirectory()
        let queue = try DatabaseQueue(path: directory.file("ledger.sqlite"))
        try AppDatabase.migrator.migrate(queue, upTo: "v4")
        try queue.write { db in
            for (index, state) in [TransferState.stored, .quarantined, .deleted, .purged].enumerated() {
                try db.execute(
                    sql: """
                        INSERT INTO transfer (id, server, sender, filename, originalFilename, size, sha256, verdict, state,
                            signatureVersion, createdAt, updatedAt)
                        VALUES (?, 'prosody', 'alice@example.org', 'f', 'f', ?, ?, 'clean', ?, 's', ?, ?)
                        """,
                    arguments: ["m\(index)", 10 << index, Contract.digest(index), state.rawValue, Contract.at(minutes: 0), Contract.at(minutes: 0)]
                )
            }
        }
        try AppDatabase.migrator.migrate(queue)
        let usage = try queue.read { db in try SQLiteLedger.quotaUsage(nil, day: Self.day(), db) }
        #expect(
            usage == [
                // On a tie the broker first, then servers, then uploaders.
                QuotaUsage(subject: .global, storedBytes: 30, storedFiles: 2),
                QuotaUsage(subject: QuotaSubject(.server, "prosody"), storedBytes: 30, storedFiles: 2, dayBytes: 150, dayFiles: 4),
                QuotaUsage(subject: QuotaSubject(.uploader, "alice@example.org"), storedBytes: 30, storedFiles: 2, dayBytes: 150, dayFiles: 4),
            ]
        )
    }
}
