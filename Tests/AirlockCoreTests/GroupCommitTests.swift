import AirlockTestSupport
import Crypto
import Foundation
import GRDB
import Logging
import PostgresNIO
import Synchronization
import Testing

@testable import AirlockCore

/// Group commit (issue 18): hand-offs ready together are made durable together, and a member that fails fails alone.
@Suite("group commit")
struct GroupCommitTests {
    /// A store in a fresh directory, staging files of distinct content, and members that record them.
    struct Setup {
        let directory: TemporaryDirectory
        let store: FileStore

        init() throws {
            self.directory = try TemporaryDirectory()
            self.store = FileStore(
                AirlockConfiguration.Storage(
                    dataDirectory: self.directory.file("var"),
                    quarantineDirectory: self.directory.file("Quarantine"),
                    quarantineKeys: ["k": Data(repeating: 7, count: 32)],
                    activeQuarantineKeyId: "k"
                ),
                node: "test"
            )
            try self.store.prepare()
        }

        /// A clean member whose staging file holds `content`.
        func member(_ index: Int, slot: String? = nil) throws -> (GroupCommitter.Member, Data) {
            let content = Data("group member \(index) \(UUID().uuidString)\n".utf8)
            let path = self.store.newStagingPath()
            try content.write(to: URL(fileURLWithPath: path))
            var entry = LedgerContractTests.handOff("t\(index)", slot: slot)
            entry.transfer.sha256 = SHA256.hash(data: content).map { String(format: "%02x", $0) }.joined()
            entry.transfer.size = Int64(content.count)
            return (GroupCommitter.Member(entry: entry, stagingPath: path), content)
        }
    }

    /// Hands `members` to `committer` all at once; what each got, in their order (nil: recorded).
    static func recordConcurrently(_ members: [GroupCommitter.Member], in committer: GroupCommitter) async -> [(any Error)?] {
        await withTaskGroup(of: (Int, (any Error)?).self) { group in
            for (index, member) in members.enumerated() {
                group.addTask {
                    do {
                        try await committer.record(member)
                        return (index, nil)
                    } catch {
                        return (index, error)
                    }
                }
            }
            return await group.reduce(into: [(any Error)?](repeating: nil, count: members.count)) { $0[$1.0] = $1.1 }
        }
    }

    /// Runs `body` with a ledger on a fresh PostgreSQL database (its defaults set as `settings` say), its URL and the
    /// ledger's logger; the database is dropped afterwards, whatever `body` does.
    static func withPostgresLedger(
        settings: [(String, String)] = [],
        logLevel: Logger.Level,
        _ body: (_ url: String, _ ledger: PostgresLedger, _ logger: Logger) async throws -> Void
    ) async throws {
        let (url, drop) = try await PostgresTestServer.createDatabase(settings: settings)
        do {
            var logger = Logger(label: "airlock.test.postgres")
            logger.logLevel = logLevel
            let ledger = try await PostgresLedger.connect(try AirlockConfiguration.PostgreSQL.parse(url), logger: logger)
            do {
                try await body(url, ledger, logger)
            } catch {
                await ledger.close()
                throw error
            }
            await ledger.close()
        } catch {
            try await drop()
            throw error
        }
        try await drop()
    }

    @Test(arguments: LedgerBackend.available)
    func concurrentHandOffsEndInOneGroupAndEachIsRecorded(backend: LedgerBackend) async throws {
        let setup = try Setup()
        let (ledger, close) = try await backend.open()
        // A window far longer than the test: the group is flushed because it is full, not because time passed.
        let committer = GroupCommitter(ledger: ledger, store: setup.store, window: .seconds(600), maximumGroupSize: 8)
        let members = try (0..<8).map { try setup.member($0) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (member, _) in members {
                group.addTask { try await committer.record(member) }
            }
            try await group.waitForAll()
        }
        #expect(committer.statistics == .init(groups: 1, members: 8, largestGroup: 8))
        for (member, content) in members {
            let (record, _) = try #require(try await ledger.transfer(id: member.entry.transfer.id))
            #expect(record.state == .stored)
            let stored = try Data(contentsOf: URL(fileURLWithPath: setup.store.cleanPath(sha256: member.entry.transfer.sha256)))
            #expect(stored == content)
            #expect(!FileManager.default.fileExists(atPath: member.stagingPath))
        }
        let chain = try await ledger.auditChain()
        #expect(chain.entries.count == 8)
        #expect(chain.transfersWithoutCreation.isEmpty)
        LedgerContractTests.expectIntactChain(chain.entries)
        try await close()
    }

    @Test(arguments: LedgerBackend.available)
    func aFailureInOneMemberFailsThatHandOffAlone(backend: LedgerBackend) async throws {
        let setup = try Setup()
        let (ledger, close) = try await backend.open()
        // The slot member 2 asks for is already held; members 5's and 6's bytes vanish before the store can move them
        // (a store error inside the transaction).
        try await ledger.recordHandOff(LedgerContractTests.handOff("holder", slot: "taken/slot.txt")) {}
        let committer = GroupCommitter(ledger: ledger, store: setup.store, window: .seconds(600), maximumGroupSize: 8)
        let members = try (0..<8).map { try setup.member($0, slot: $0 == 2 ? "taken/slot.txt" : nil) }
        try FileManager.default.removeItem(atPath: members[5].0.stagingPath)
        try FileManager.default.removeItem(atPath: members[6].0.stagingPath)
        let outcomes = await Self.recordConcurrently(members.map(\.0), in: committer)
        #expect(committer.statistics.groups == 1)
        #expect(outcomes[2] as? BrokerError == .slotTaken("taken/slot.txt"))
        #expect(outcomes[5] is StoreError)
        #expect(outcomes[6] is StoreError)
        for index in [0, 1, 3, 4, 7] {
            #expect(outcomes[index] == nil, "member \(index): \(String(describing: outcomes[index]))")
            #expect(try await ledger.transfer(id: "t\(index)")?.0.state == .stored)
        }
        for index in [2, 5, 6] {
            #expect(try await ledger.transfer(id: "t\(index)") == nil)
        }
        let chain = try await ledger.auditChain()
        #expect(chain.entries.count == 6)
        LedgerContractTests.expectIntactChain(chain.entries)
        try await close()
    }

    /// A `syncfs` that fails fails the whole group: nothing is recorded, and the files the group moved into the store
    /// are removed, since their bytes are not known to be on disk. The same content handed off again is stored anew
    /// and synced by its own group, not found in the store and answered without a sync.
    @Test(arguments: LedgerBackend.available)
    func aFailedFilesystemSyncFailsTheGroupAndLeavesNoUnsyncedFileBehind(backend: LedgerBackend) async throws {
        let setup = try Setup()
        let (ledger, close) = try await backend.open()
        let syncs = Mutex(0)
        let committer = GroupCommitter(ledger: ledger, store: setup.store, window: .seconds(600), maximumGroupSize: 3) { _ in
            let call = syncs.withLock { count -> Int in
                count += 1
                return count
            }
            if call == 1 { throw StoreError.io(operation: "syncfs (injected)", errno: EIO) }
        }
        let members = try (0..<3).map { try setup.member($0) }
        let failed = await Self.recordConcurrently(members.map(\.0), in: committer)
        #expect(failed.allSatisfy { $0 is StoreError }, "\(failed)")
        for (member, _) in members {
            #expect(try await ledger.transfer(id: member.entry.transfer.id) == nil)
            #expect(!FileManager.default.fileExists(atPath: setup.store.cleanPath(sha256: member.entry.transfer.sha256)))
        }
        #expect(try await ledger.auditChain().entries.isEmpty)

        // The same bytes again, from new staging files: stored, and this time the group synced them.
        let again = try members.map { member, content in
            let path = setup.store.newStagingPath()
            try content.write(to: URL(fileURLWithPath: path))
            return GroupCommitter.Member(entry: member.entry, stagingPath: path)
        }
        let retried = await Self.recordConcurrently(again, in: committer)
        #expect(retried.allSatisfy { $0 == nil }, "\(retried)")
        #expect(syncs.withLock { $0 } == 2)
        #expect(committer.statistics.groups == 2)
        for (member, content) in members {
            #expect(try await ledger.transfer(id: member.entry.transfer.id)?.0.state == .stored)
            #expect(try Data(contentsOf: URL(fileURLWithPath: setup.store.cleanPath(sha256: member.entry.transfer.sha256))) == content)
        }
        LedgerContractTests.expectIntactChain(try await ledger.auditChain().entries)
        try await close()
    }

    /// PostgreSQL ends the group's connection while the group waits for its syncfs (a restart, a fail-over): the commit
    /// fails instead of waiting forever for an answer, every member fails, and the files the group moved into the
    /// store, named by no row, are synced again before the next group can start.
    @Test(.timeLimit(.minutes(1)), arguments: LedgerBackend.available.filter { $0 == .postgresql })
    func aGroupWhoseConnectionEndsFailsAndSyncsTheFilesItMoved(backend: LedgerBackend) async throws {
        let setup = try Setup()
        // The ended connection is reported, as it should be: not printed here.
        try await Self.withPostgresLedger(logLevel: .critical) { url, ledger, _ in
            let syncs = Mutex(0)
            let ended = Mutex<ProcessRunner.Result?>(nil)
            let committer = GroupCommitter(ledger: ledger, store: setup.store, window: .seconds(600), maximumGroupSize: 3) { _ in
                let call = syncs.withLock { count -> Int in
                    count += 1
                    return count
                }
                guard call == 1 else { return }
                // The group's own syncfs passes; meanwhile the server ends every other client connection to this
                // database, the group's among them.
                let result = try ProcessRunner.runBlocking(
                    "/usr/bin/psql",
                    [
                        "-Atq", url, "-c",
                        """
                        SELECT string_agg(pid::text, ',') FROM (
                            SELECT pid FROM pg_stat_activity
                            WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
                            OFFSET 0
                        ) AS others WHERE pg_terminate_backend(pid)
                        """,
                    ]
                )
                ended.withLock { $0 = result }
                // Until those backends are gone, so that the group's own connection is closed before its COMMIT is
                // sent (not while it is on its way: that order fails in any version).
                let pids = result.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines)
                guard !pids.isEmpty else { return }
                while true {
                    let left = try ProcessRunner.runBlocking(
                        "/usr/bin/psql",
                        ["-Atq", url, "-c", "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY('{\(pids)}'::int[])"]
                    )
                    guard left.status == 0, left.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) != "0" else { break }
                }
            }
            let members = try (0..<3).map { try setup.member($0) }
            let failed = await Self.recordConcurrently(members.map(\.0), in: committer)
            let terminated = try #require(ended.withLock { $0 })
            #expect(terminated.status == 0, "\(terminated.standardError)")
            #expect(!terminated.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "no connection was ended")
            #expect(failed.allSatisfy { $0 != nil }, "\(failed)")
            // The group's syncfs, then the one after its failure.
            #expect(syncs.withLock { $0 } == 2)
            #expect(committer.statistics == .init(groups: 1, members: 3, largestGroup: 3))
            for (member, content) in members {
                #expect(try await ledger.transfer(id: member.entry.transfer.id) == nil)
                #expect(try Data(contentsOf: URL(fileURLWithPath: setup.store.cleanPath(sha256: member.entry.transfer.sha256))) == content)
            }
        }
    }

    /// A member whose rows the database refuses (here a transfer id already taken, refused by the insert itself) is
    /// rolled back alone: the members after it chain their audit entries to the last one that committed.
    @Test(arguments: LedgerBackend.available)
    func aMemberTheDatabaseRefusesLeavesTheAuditChainIntact(backend: LedgerBackend) async throws {
        try await LedgerContractTests().withLedger(backend) { ledger in
            try await LedgerContractTests.record(LedgerContractTests.handOff("dup"), in: ledger)
            let members = ["g0", "g1", "dup", "g3", "g4"].enumerated().map { index, id in
                GroupMember(
                    entry: LedgerContractTests.handOff(
                        id,
                        sha256: LedgerContractTests.digest(900 + index),
                        created: LedgerContractTests.at(minutes: Int64(index + 1)),
                        cacheVerdict: true
                    ),
                    inTransaction: {}
                )
            }
            let outcomes = try await ledger.recordHandOffs(members, beforeCommit: {})
            #expect(outcomes.map { (try? $0.get()) != nil } == [true, true, false, true, true])
            for id in ["g0", "g1", "g3", "g4"] {
                #expect(try await ledger.transfer(id: id)?.0.state == .stored)
            }
            // The refused member's verdict cache entry went with it; the others' are there.
            #expect(try await ledger.cachedVerdict(sha256: LedgerContractTests.digest(902), signatureVersion: "sigs-27001") == nil)
            #expect(try await ledger.cachedVerdict(sha256: LedgerContractTests.digest(903), signatureVersion: "sigs-27001") != nil)
            let chain = try await ledger.auditChain()
            #expect(chain.entries.count == 5)
            #expect(chain.entries.compactMap(\.transferId) == ["dup", "g0", "g1", "g3", "g4"])
            LedgerContractTests.expectIntactChain(chain.entries)
        }
    }

    /// The durability promise rests on synced commits: checked on the connection, not assumed.
    @Test func theSQLiteLedgerCommitsWithFullSynchronousWrites() async throws {
        let directory = try TemporaryDirectory()
        let ledger = try SQLiteLedger(path: directory.file("ledger.sqlite"))
        let (mode, journal) = try await ledger.writer.write { db in
            (try Int.fetchOne(db, sql: "PRAGMA synchronous"), try String.fetchOne(db, sql: "PRAGMA journal_mode"))
        }
        #expect(mode == 2)  // FULL
        #expect(journal == "wal")
        // Statement journals (one per group member's savepoint) and temporary tables stay in memory, on the writer and
        // on readers: nothing of the ledger is written to files outside the data directory.
        #expect(try await ledger.writer.write { db in try Int.fetchOne(db, sql: "PRAGMA temp_store") } == 2)  // MEMORY
        #expect(try await ledger.writer.read { db in try Int.fetchOne(db, sql: "PRAGMA temp_store") } == 2)
        // No index on transfer.state alone (v8): the one on (state, createdAt) answers lookups by state.
        let indexes = try await ledger.writer.read { db in try String.fetchAll(db, sql: "SELECT name FROM pragma_index_list('transfer')") }
        #expect(indexes.contains("transferStateCreatedAt"))
        #expect(!indexes.contains("transfer_on_state"))
        let plan = try await ledger.writer.read { db in
            try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN SELECT id FROM transfer WHERE state = 'stored' ORDER BY createdAt")
                .map { $0["detail"] as String }.joined(separator: "; ")
        }
        #expect(plan.contains("transferStateCreatedAt"), "\(plan)")
    }

    /// PostgreSQL's commits are synced too: the ledger's connections ask for `synchronous_commit = on` when they start,
    /// checked on a database whose own default is `off` (a connection without that request sees `off` there).
    @Test(arguments: LedgerBackend.available.filter { $0 == .postgresql })
    func thePostgreSQLLedgerCommitsSynchronouslyWhateverTheDatabaseSays(backend: LedgerBackend) async throws {
        try await Self.withPostgresLedger(settings: [("synchronous_commit", "off")], logLevel: .warning) { url, ledger, logger in
            let plain = try await ProcessRunner.run("/usr/bin/psql", ["-Atq", url, "-c", "SHOW synchronous_commit"])
            #expect(plain.standardOutput.trimmingCharacters(in: .whitespacesAndNewlines) == "off", "\(plain.standardError)")
            let seen = try await ledger.client.withConnection { connection in
                var values: [String] = []
                for try await value in try await connection.query("SHOW synchronous_commit", logger: logger).decode(String.self) {
                    values.append(value)
                }
                return values
            }
            #expect(seen == ["on"])
        }
    }

    /// A directory sync that fails is an error, not a shrug: what was just named there is not known to be durable.
    @Test
    func aDirectorySyncThatFailsIsAnError() throws {
        let setup = try Setup()
        try FileStore.syncDirectory(setup.store.filesDirectory)
        let missing = setup.store.filesDirectory + "/no-such-directory"
        #expect(throws: StoreError.self) { try FileStore.syncDirectory(missing) }
        // A file is not a directory: refused at open (O_DIRECTORY), not synced as if it were one.
        let file = setup.store.newStagingPath()
        try Data("x".utf8).write(to: URL(fileURLWithPath: file))
        #expect(throws: StoreError.self) { try FileStore.syncDirectory(file) }
    }

    /// A new file's name is durable once the directories that gained entries are synced: its own `files/ab/cd`, and
    /// each directory above whose child was just created. Content already stored changes no directory.
    @Test
    func storingNamesTheDirectoriesThatGainedEntries() throws {
        let setup = try Setup()
        let files = setup.store.filesDirectory
        func stage(_ text: String) throws -> String {
            let path = setup.store.newStagingPath()
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            return path
        }
        let first = String(repeating: "ab", count: 32)
        let sibling = "abcd" + String(repeating: "e", count: 60)
        let cousin = "abef" + String(repeating: "e", count: 60)
        // The first file under files/ab/cd creates both directories: all three gained an entry.
        #expect(
            try setup.store.storeClean(stagingPath: stage("one"), sha256: first, syncDirectory: false)?.directoriesToSync
                == ["\(files)/ab/ab", "\(files)/ab", files]
        )
        // Same content again: nothing changes on disk but the staging file's removal.
        let again = try stage("one")
        #expect(try setup.store.storeClean(stagingPath: again, sha256: first, syncDirectory: false) == nil)
        #expect(!FileManager.default.fileExists(atPath: again))
        // A new leaf under an existing files/ab: the leaf and files/ab; then a file in an existing leaf: the leaf alone.
        #expect(
            try setup.store.storeClean(stagingPath: stage("two"), sha256: cousin, syncDirectory: false)?.directoriesToSync
                == ["\(files)/ab/ef", "\(files)/ab"]
        )
        #expect(
            try setup.store.storeClean(stagingPath: stage("three"), sha256: sibling, syncDirectory: false)?.directoriesToSync
                == ["\(files)/ab/cd", "\(files)/ab"]
        )
        let fourth = "abcd" + String(repeating: "f", count: 60)
        #expect(try setup.store.storeClean(stagingPath: stage("four"), sha256: fourth)?.directoriesToSync == ["\(files)/ab/cd"])
        #expect(try String(contentsOfFile: setup.store.cleanPath(sha256: fourth), encoding: .utf8) == "four")
    }

    /// The identifiers of transfers, tokens and staging files: version 7, RFC 4122 variant, never the same twice.
    @Test
    func timeOrderedIdentifiersAreVersionSevenAndSortByTime() {
        // Half a millisecond past each: no rounding of the binary fraction moves one into the previous millisecond.
        func at(milliseconds: Int64) -> Date { Date(timeIntervalSince1970: (Double(milliseconds) + 0.5) / 1000) }
        let start = at(milliseconds: 1_796_000_000_123)
        // A thousand, each a millisecond after the last: their text sorts as their times do.
        let identifiers = (0..<1000).map { UUID.timeOrdered(at: at(milliseconds: 1_796_000_000_123 + Int64($0))) }
        #expect(Set(identifiers).count == identifiers.count)
        let texts = identifiers.map(\.uuidString)
        let outOfOrder = zip(texts, texts.dropFirst()).filter { $0 >= $1 }
        #expect(outOfOrder.isEmpty, "\(outOfOrder.count) out of order, first \(outOfOrder.first.map { "\($0)" } ?? "")")
        for identifier in identifiers {
            let text = Array(identifier.uuidString)
            #expect(text[14] == "7")
            #expect("89AB".contains(text[19]))
        }
        // The first 48 bits are the Unix time in milliseconds.
        let bytes = withUnsafeBytes(of: identifiers[0].uuid) { Array($0) }
        let milliseconds = bytes.prefix(6).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        #expect(milliseconds == 1_796_000_000_123)
        // Made in the same millisecond, they still differ: 74 random bits each, none stuck.
        let same = (0..<1000).map { _ in withUnsafeBytes(of: UUID.timeOrdered(at: start).uuid) { Array($0) } }
        #expect(Set(same).count == same.count)
        for byte in 6..<16 {
            let mask: UInt8 = byte == 6 ? 0x0F : byte == 8 ? 0x3F : 0xFF
            let ones = same.reduce(UInt8(0)) { $0 | ($1[byte] & mask) }
            let zeros = same.reduce(UInt8(0)) { $0 | (~$1[byte] & mask) }
            #expect(ones == mask && zeros == mask, "byte \(byte)")
        }
    }

    @Test
    func digestsAreWrittenAsLowercaseHexadecimal() {
        #expect(SHA256.hash(data: Data()).hexString == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        for seed in 0..<200 {
            let digest = SHA256.hash(data: Data("body \(seed)".utf8))
            let expected = digest.map { String(format: "%02x", $0) }.joined()
            #expect(digest.hexString == expected)
        }
    }

    @Test
    func randomIdentifiersAreVersionFourAndDistinct() {
        let identifiers = (0..<1000).map { _ in UUID.random() }
        #expect(Set(identifiers).count == identifiers.count)
        for identifier in identifiers {
            let text = identifier.uuidString
            #expect(Array(text)[14] == "4")
            #expect("89AB".contains(Array(text)[19]))
        }
        // Not all the random bits are the same: each of the 122 varies across a thousand draws.
        let words = identifiers.map { withUnsafeBytes(of: $0.uuid) { Array($0) } }
        for byte in 0..<16 {
            let mask: UInt8 = byte == 6 ? 0x0F : byte == 8 ? 0x3F : 0xFF
            let ones = words.reduce(UInt8(0)) { $0 | ($1[byte] & mask) }
            let zeros = words.reduce(UInt8(0)) { $0 | (~$1[byte] & mask) }
            #expect(ones == mask && zeros == mask, "byte \(byte)")
        }
    }
}
