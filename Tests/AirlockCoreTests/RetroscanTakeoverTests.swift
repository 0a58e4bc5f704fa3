import AirlockTestSupport
import Crypto
import Foundation
import Logging
import Synchronization
import Testing

@testable import AirlockCore

/// Issue 14, part 3: contents a node leased for a retro-scan and never checked (it died) are checked by another
/// node once the leases have run out, without waiting for the next signature change.
@Suite("retro-scan: the contents of a node that died")
struct RetroscanTakeoverTests {
    @Test func aPassLooksAgainOnceAnotherNodesLeasesHaveRunOut() async throws {
        let directory = try TemporaryDirectory()
        var configuration = AirlockConfiguration.development
        configuration.storage.dataDirectory = directory.file("var")
        configuration.storage.quarantineDirectory = directory.file("Quarantine")
        configuration.scanner.signatureDirectories = [Fixtures.signatureDirectory]
        // Leases of 5 × 1 s.
        configuration.scanner.scanTimeoutSeconds = 1
        var logger = Logger(label: "airlock.test")
        logger.logLevel = .error
        // The broker's clock, moved by the test: leases run out when it says, however loaded the machine is.
        let clock = Mutex(Date())
        let broker = try await Broker.start(configuration: configuration, logger: logger) { clock.withLock { $0 } }
        defer { Task { try? await broker.shutdown() } }

        // Six clean contents, stored and recorded, that the serving signatures have not checked.
        var digests: [String] = []
        for index in 0..<6 {
            let bytes = Fixtures.randomBytes(count: 4_000, seed: UInt64(4_100 + index))
            let sha256 = SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
            let path = broker.store.cleanPath(sha256: sha256)
            try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try bytes.write(to: URL(fileURLWithPath: path))
            let created = clock.withLock { $0 }.addingTimeInterval(-Double(index) * 60)
            try await LedgerContractTests.record(LedgerContractTests.handOff("k\(index)", sha256: sha256, created: created), in: broker.ledger)
            digests.append(sha256)
        }
        // A node that died holding the three newest, for one more second of the broker's clock.
        let now = clock.withLock { $0 }
        let ghost = try await broker.ledger.claimRetroscanCandidates(
            since: now.addingTimeInterval(-3600),
            signatureVersion: broker.inspector.signatures.version,
            limit: 3,
            excluding: [],
            node: "ghost",
            now: now,
            leaseUntil: now.addingTimeInterval(1)
        )
        #expect(Set(ghost.map(\.sha256)) == Set(digests[0..<3]))

        let retroscanner = Retroscanner(broker: broker)
        let (events, sink) = AsyncStream.makeStream(of: RetroscanEvent.self)
        retroscanner.observe { sink.yield($0) }
        let running = Task { await retroscanner.run() }
        // A bound on the wait, not a synchronisation: the passes end the stream themselves.
        let bound = Task {
            try await Task.sleep(for: .seconds(60))
            sink.finish()
        }
        var checked: [String] = []
        var passes: [RetroscanProgress] = []
        for await event in events {
            switch event {
            case .checked(let sha256): checked.append(sha256)
            case .recalled: break
            case .passFinished(_, let progress):
                passes.append(progress)
                if progress.pending == 0 { sink.finish() }
                // The first pass is over: the dead node's leases run out before the pass it asks for.
                clock.withLock { $0 = $0.addingTimeInterval(60) }
            }
        }
        bound.cancel()
        retroscanner.finish()
        await running.value

        // The first pass checks what nobody holds and leaves the ghost's three; the one it asks for later (after
        // its own lease time, 5 s) checks them.
        #expect(passes.map(\.pending) == [3, 0])
        #expect(Set(checked) == Set(digests))
        #expect(checked.count == 6)
        #expect(Set(checked.prefix(3)) == Set(digests[3...]))
    }
}
