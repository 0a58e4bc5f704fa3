import AirlockCore
import AirlockTestSupport
import Foundation
import Logging
import NIOCore
import NIOPosix
import Testing

/// The inspection that reads an upload while it is received: same verdicts as inspecting the finished file, and
/// it always lets go (upload cut off, cancelled), so no receiving slot is lost.
@Suite("inspection while receiving", .serialized)
final class InspectionWhileReceivingTests {
    let inspector: Inspector
    let directory: TemporaryDirectory
    let threadPool = NIOThreadPool(numberOfThreads: 1)
    static let slots = 3

    init() async throws {
        var configuration = AirlockConfiguration.development
        configuration.scanner.signatureDirectories = [Fixtures.signatureDirectory]
        configuration.scanner.maxFileSize = 4 << 20
        configuration.scanner.maxScanSize = 8 << 20
        configuration.scanner.workers = Self.slots
        configuration.policy.blockedTypes = []
        let directory = try TemporaryDirectory()
        // The scanner's scratch directory inside the test's own, which goes with it (the asynchronous shutdown in
        // deinit may not run before the test process exits).
        self.inspector = try await Inspector.start(
            configuration: configuration,
            temporaryDirectory: directory.file("scanning"),
            logger: Logger(label: "test")
        )
        self.directory = directory
        self.threadPool.start()
    }

    deinit {
        let inspector = self.inspector
        let threadPool = self.threadPool
        Task {
            try? await inspector.shutdown()
            try? await threadPool.shutdownGracefully()
        }
    }

    private func staging(_ name: String, expectedSize: Int?) throws -> StagingFile {
        try StagingFile(path: self.directory.file(name), expectedSize: expectedSize.map(Int64.init), threadPool: self.threadPool)
    }

    /// Appends `content` in pieces, as a network body arrives.
    private func receive(_ content: Data, into staging: StagingFile, upTo end: Int? = nil) async throws {
        let end = end ?? content.count
        var offset = 0
        while offset < end {
            let count = min(96 * 1024, end - offset)
            try await staging.append(ByteBuffer(bytes: content[offset..<(offset + count)]))
            offset += count
        }
    }

    static let contents: [(String, Data)] = [
        ("clean random", Fixtures.randomBytes(count: 3 << 20, seed: 7)),
        ("EICAR after 3 MiB of zeros", Data(count: 3 << 20) + Fixtures.eicar),
        // Padded past the size below which nothing is inspected while received; the types are read from the start.
        ("PNG", Fixtures.png + Data(count: 300 << 10)),
        ("PE declared as JPEG", Fixtures.portableExecutable + Data(count: 300 << 10)),
    ]

    @Test(arguments: 0..<contents.count)
    func theVerdictEqualsTheOneOnTheFinishedFile(_ index: Int) async throws {
        let (name, content) = Self.contents[index]
        let declared = name.hasSuffix("JPEG") ? "image/jpeg" : nil
        let staging = try self.staging("upload-\(index)", expectedSize: content.count)
        let inProgress = try #require(self.inspector.beginInspection(of: staging, declaredType: declared))
        try await self.receive(content, into: staging)
        let (size, _) = try await staging.finish()
        let early = try #require(await inProgress.report(), "\(name)")
        let afterwards = await self.inspector.inspect(fileAt: staging.path, declaredType: declared)
        #expect(early.size == size)
        #expect(early.verdict == afterwards.verdict, "\(name)")
        #expect(early.detectedType == afterwards.detectedType, "\(name)")
        if name.hasPrefix("EICAR") {
            #expect(early.verdict.kind == .infected)
        }
    }

    @Test func anUploadCutOffMidwayEndsItsInspectionWithoutAResult() async throws {
        let content = Fixtures.randomBytes(count: 2 << 20, seed: 11)
        let staging = try self.staging("cut-off", expectedSize: content.count)
        let inProgress = try #require(self.inspector.beginInspection(of: staging, declaredType: nil))
        try await self.receive(content, into: staging, upTo: 1 << 20)
        staging.discard()
        #expect(await inProgress.report() == nil)
    }

    @Test func cancellingEndsAnInspectionWaitingForBytes() async throws {
        let content = Fixtures.randomBytes(count: 2 << 20, seed: 12)
        let staging = try self.staging("cancelled", expectedSize: content.count)
        let inProgress = try #require(self.inspector.beginInspection(of: staging, declaredType: nil))
        try await self.receive(content, into: staging, upTo: 1 << 20)
        await inProgress.cancel()
        #expect(await inProgress.report() == nil)
        staging.discard()
    }

    @Test func nothingStartsWithoutAnAnnouncedSizeWithinTheLimit() async throws {
        let small = Int(Inspector.minimumSizeToInspectWhileReceiving) - 1
        for expected in [nil, 0, small, (4 << 20) + 1] {
            let staging = try self.staging("unannounced-\(expected ?? -1)", expectedSize: expected)
            #expect(self.inspector.beginInspection(of: staging, declaredType: nil) == nil)
            staging.discard()
        }
    }

    @Test func slowUploadsHoldAtMostOneSlotEachAndGiveItBack() async throws {
        var held: [(StagingFile, InspectionInProgress)] = []
        for index in 0..<Self.slots {
            let staging = try self.staging("slow-\(index)", expectedSize: 1 << 20)
            held.append((staging, try #require(self.inspector.beginInspection(of: staging, declaredType: nil))))
        }
        // Every slot waits on a sender: the next upload is inspected after its last byte instead.
        let extra = try self.staging("extra", expectedSize: 1 << 20)
        #expect(self.inspector.beginInspection(of: extra, declaredType: nil) == nil)
        extra.discard()
        for (staging, inProgress) in held {
            staging.discard()
            #expect(await inProgress.report() == nil)
        }
        // Every slot came back.
        var again: [(StagingFile, InspectionInProgress)] = []
        for index in 0..<Self.slots {
            let staging = try self.staging("again-\(index)", expectedSize: 1 << 20)
            again.append((staging, try #require(self.inspector.beginInspection(of: staging, declaredType: nil))))
        }
        for (staging, inProgress) in again {
            await inProgress.cancel()
            staging.discard()
        }
    }

    @Test func contentJustScannedCleanIsNotScannedAgainWhileReceived() async throws {
        let content = Fixtures.randomBytes(count: 1 << 20, seed: 13)
        let first = try self.staging("first", expectedSize: content.count)
        let firstInspection = try #require(self.inspector.beginInspection(of: first, declaredType: nil))
        try await self.receive(content, into: first)
        _ = try await first.finish()
        #expect(await firstInspection.report()?.verdict == .clean)

        // The same bytes again: the verdict cache will answer, so the scan while receiving stands down.
        let second = try self.staging("second", expectedSize: content.count)
        let secondInspection = try #require(self.inspector.beginInspection(of: second, declaredType: nil))
        try await self.receive(content, into: second)
        _ = try await second.finish()
        #expect(await secondInspection.report() == nil)

        // Different bytes of the same size are scanned.
        var changed = content
        changed[changed.count - 1] ^= 0xff
        let third = try self.staging("third", expectedSize: changed.count)
        let thirdInspection = try #require(self.inspector.beginInspection(of: third, declaredType: nil))
        try await self.receive(changed, into: third)
        _ = try await third.finish()
        #expect(await thirdInspection.report()?.verdict == .clean)
    }
}
