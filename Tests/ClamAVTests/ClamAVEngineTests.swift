import AirlockTestSupport
import ClamAV
import Foundation
import Testing

@Suite("libclamav engine")
struct ClamAVEngineTests {
    let engine: ClamAVEngine

    init() throws {
        self.engine = try ClamAVEngine(databasePaths: [Fixtures.signatureDirectory], limits: ScanLimits())
    }

    private func scan(_ path: String, with engine: ClamAVEngine? = nil) throws -> ScanResult {
        try Self.scan(path, with: engine ?? self.engine)
    }

    private static func scan(_ path: String, with engine: ClamAVEngine) throws -> ScanResult {
        let descriptor = open(path, O_RDONLY)
        #expect(descriptor >= 0)
        defer { close(descriptor) }
        return try engine.scan(fileDescriptor: descriptor, name: path)
    }

    @Test func loadsTheBundledSignatures() {
        // Two body signatures and one hash signature.
        #expect(self.engine.signatureCount == 3)
    }

    @Test func detectsEICARByDescriptorAndFromMemory() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("eicar.com", Fixtures.eicar)
        guard case .virus(let signature) = try self.scan(path) else {
            Issue.record("EICAR was not detected")
            return
        }
        #expect(signature.hasPrefix("Airlock.Test.EICAR"))
        let fromMemory = try Fixtures.eicar.withUnsafeBytes { try self.engine.scan(bytes: $0) }
        #expect(fromMemory == .virus(signature: signature))
    }

    @Test func cleanContentIsClean() throws {
        let directory = try TemporaryDirectory()
        #expect(try self.scan(directory.write("note.txt", Data("hello, world\n".utf8))) == .clean)
        #expect(try self.scan(directory.write("image.png", Fixtures.png)) == .clean)
        let random = Fixtures.randomBytes(count: 1 << 20, seed: 7)
        #expect(try random.withUnsafeBytes { try self.engine.scan(bytes: $0) } == .clean)
    }

    @Test func aFileOverMaxFileSizeIsNeverClean() throws {
        // libclamav's default would return CLEAN without reading a byte; the heuristic must fire instead.
        let small = try ClamAVEngine(databasePaths: [Fixtures.signatureDirectory], limits: ScanLimits(maxFileSize: 1 << 20, maxScanSize: 4 << 20))
        let directory = try TemporaryDirectory()
        let path = try directory.write("big.bin", Fixtures.randomBytes(count: 2 << 20, seed: 1))
        let result = try self.scan(path, with: small)
        guard case .heuristic(let name) = result else {
            Issue.record("expected a limits heuristic, got \(result)")
            return
        }
        #expect(name.contains("Limits") || name.contains("Exceeds"))
    }

    @Test func anArchiveMemberOverTheLimitIsUninspectable() throws {
        // libclamav skips such a member silently, even with the heuristic: Airlock's metadata callback catches it.
        let small = try ClamAVEngine(databasePaths: [Fixtures.signatureDirectory], limits: ScanLimits(maxFileSize: 1 << 20, maxScanSize: 4 << 20))
        let directory = try TemporaryDirectory()
        try directory.writeZeros("zeros.bin", count: 3 << 20)
        let archive = try directory.zip("bomb.zip", members: ["zeros.bin"])
        let result = try self.scan(archive, with: small)
        #expect(!result.isClean, "got \(result)")
        guard case .uninspectable(let reason) = result else {
            Issue.record("expected uninspectable, got \(result)")
            return
        }
        #expect(reason.contains("zeros.bin"))
    }

    @Test func aMemberWhoseHeadersUnderstateItsSizeIsNeverClean() throws {
        // 3 MiB of zeros then EICAR, deflated; the headers claim 1 KiB. libclamav trims the member at MaxFileSize
        // (2 MiB) and would scan only the zeros; the extracted layer's real size gives it away.
        let small = try ClamAVEngine(databasePaths: [Fixtures.signatureDirectory], limits: ScanLimits(maxFileSize: 2 << 20, maxScanSize: 8 << 20))
        let directory = try TemporaryDirectory()
        try directory.write("payload.bin", Data(count: 3 << 20) + Fixtures.eicar)
        let archive = try directory.zip("liar.zip", members: ["payload.bin"])
        try directory.understateZipSizes("liar.zip", declaredSize: 1024)
        let result = try self.scan(archive, with: small)
        #expect(!result.isClean, "got \(result)")
    }

    @Test func archiveContentOverMaxScanSizeIsUninspectable() throws {
        let small = try ClamAVEngine(databasePaths: [Fixtures.signatureDirectory], limits: ScanLimits(maxFileSize: 2 << 20, maxScanSize: 4 << 20))
        let directory = try TemporaryDirectory()
        let members = try (1...3).map { index in
            try directory.writeZeros("part\(index).bin", count: 3 << 19)
            return "part\(index).bin"
        }
        let result = try self.scan(try directory.zip("bomb.zip", members: members), with: small)
        #expect(result == .uninspectable(reason: "archive content exceeds the scan size limit of \(4 << 20) bytes"))
    }

    @Test func anEncryptedArchiveIsNeverClean() throws {
        let directory = try TemporaryDirectory()
        try directory.write("secret.txt", Data("nothing to see here\n".utf8))
        let result = try self.scan(try directory.zip("secret.zip", members: ["secret.txt"], password: "hunter2"))
        #expect(!result.isClean, "got \(result)")
        if case .virus = result {
            Issue.record("an encrypted archive is not a signature match: \(result)")
        }
    }

    @Test func aCorruptSignatureFileIsNamed() throws {
        let directory = try TemporaryDirectory()
        try directory.write("good.ndb", Data("Good.Sig:0:*:41424344454647\n".utf8))
        let bad = try directory.write("broken.ndb", Data("this is not a signature\n".utf8))
        #expect {
            _ = try ClamAVEngine(databasePaths: [directory.path], limits: ScanLimits())
        } throws: { error in
            (error as? ClamAVError)?.culprit == bad
        }
    }

    @Test func sixteenConcurrentScansAgreeWithSequentialScans() async throws {
        let directory = try TemporaryDirectory()
        var paths = try FileManager.default.contentsOfDirectory(atPath: Fixtures.clamAVTestFiles).sorted()
            .map { "\(Fixtures.clamAVTestFiles)/\($0)" }
        paths.append(try directory.write("eicar.com", Fixtures.eicar))
        paths.append(try directory.write("clean.txt", Data("clean\n".utf8)))
        paths.append(try directory.write("random.bin", Fixtures.randomBytes(count: 300_000, seed: 3)))
        let allPaths = paths
        let sequential = try allPaths.map { try self.scan($0) }
        #expect(sequential.filter { !$0.isClean }.count >= 45)

        let concurrent = ResultSlots(count: allPaths.count * 16)
        let engine = self.engine
        // The 16 threads are GCD's, and this test waits for them on a dispatch queue, not on a cooperative thread
        // that the other suites' servers need.
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread {
                DispatchQueue.concurrentPerform(iterations: allPaths.count * 16) { index in
                    concurrent.store(index, Result { try Self.scan(allPaths[index % allPaths.count], with: engine) })
                }
                done.resume()
            }
        }
        for index in 0..<(paths.count * 16) {
            #expect(try concurrent.value(index).get() == sequential[index % paths.count], "\(paths[index % paths.count])")
        }
    }
}

/// Results written by concurrent scans, one slot each.
private final class ResultSlots: @unchecked Sendable {
    // Each index is written by exactly one iteration of concurrentPerform, and read after it returns.
    private var slots: [Result<ScanResult, any Error>?]
    private let lock = NSLock()

    init(count: Int) {
        self.slots = Array(repeating: nil, count: count)
    }

    func store(_ index: Int, _ result: Result<ScanResult, any Error>) {
        self.lock.withLock { self.slots[index] = result }
    }

    func value(_ index: Int) -> Result<ScanResult, any Error> {
        self.lock.withLock { self.slots[index]! }
    }
}
