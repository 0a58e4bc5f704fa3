import AirlockTestSupport
import Foundation
import Testing

@testable import AirlockCore

@Suite("quarantine encryption and key rotation")
struct QuarantineKeyRotationTests {
    /// The shipped development `storage.quarantineKey`, the single key of every quarantine before rotation.
    static let legacyKey = Data(base64Encoded: "A/5gPtAAkrFgfwOJCzdap7K8hIDTce+ioiPctUX2UDA=")!
    /// An `ALQ1` file (the format before key rotation) of transfer `legacy-alq1-transfer` holding `legacyPlaintext`,
    /// encrypted under `legacyKey`. Written by an independent implementation of the format (Python's `cryptography`
    /// AES-GCM: magic `ALQ1`, big-endian length 32, nonce 00…0b, ciphertext and tag, additional data
    /// `legacy-alq1-transfer|0|1`), not by the code under test.
    static let legacyFile = Data(
        base64Encoded: "QUxRMQAAACAAAQIDBAUGBwgJCgvYnKis8bjz/5ceUL16M6nMjOMWZEifIJHxZ7B55mc+PhoQJU4duJbC7Z0Hoo0iJ98="
    )!
    static let legacyTransferId = "legacy-alq1-transfer"
    static let legacyPlaintext = Data("quarantined before key rotation\n".utf8)
    /// `sha256sum` of `legacyPlaintext`.
    static let legacySHA256 = "ce183bc010c6483e430a5017418986e3079dbf3f0c5ce6edb96cde78978e7c2f"

    /// A store in a fresh directory with these keys.
    static func store(in directory: TemporaryDirectory, keys: [String: Data], active: String) throws -> FileStore {
        let store = FileStore(
            AirlockConfiguration.Storage(
                dataDirectory: directory.file("var"),
                quarantineDirectory: directory.file("Quarantine"),
                quarantineKeys: keys,
                activeQuarantineKeyId: active
            )
        )
        try store.prepare()
        return store
    }

    static func key(_ byte: UInt8) -> Data { Data(repeating: byte, count: 32) }

    /// Quarantines `content` as `transferId` through a staging file, as the broker does.
    static func quarantine(_ content: Data, as transferId: String, in store: FileStore) throws {
        let staging = store.newStagingPath()
        try content.write(to: URL(fileURLWithPath: staging))
        try store.quarantine(stagingPath: staging, transferId: transferId)
    }

    static func exported(_ transferId: String, from store: FileStore, into directory: TemporaryDirectory) throws -> Data {
        let path = directory.file("export-\(UUID().uuidString)")
        try store.exportQuarantined(transferId: transferId, to: path)
        return try Data(contentsOf: URL(fileURLWithPath: path))
    }

    @Test func newFilesNameTheActiveKeyAndRoundTripAcrossChunks() throws {
        let directory = try TemporaryDirectory()
        let store = try Self.store(in: directory, keys: ["old": Self.key(1), "new": Self.key(2)], active: "new")
        // Two full chunks and a part: chunk boundaries and the last-chunk flag are exercised.
        let content = Fixtures.randomBytes(count: 2 * QuarantineCipher.chunkSize + 1234, seed: 7)
        try Self.quarantine(content, as: "t1", in: store)
        let raw = try Data(contentsOf: URL(fileURLWithPath: store.quarantinePath(transferId: "t1")))
        #expect(raw.prefix(4) == Data("ALQ2".utf8))
        #expect(raw[4] == 3)
        #expect(raw[5..<8] == Data("new".utf8))
        #expect(try store.quarantineKeyId(transferId: "t1") == "new")
        #expect(try Self.exported("t1", from: store, into: directory) == content)
        // Nothing to do for a file already under the active key.
        #expect(try store.reencryptQuarantined(transferId: "t1") == nil)
        // An empty file is one empty chunk, marked last.
        try Self.quarantine(Data(), as: "empty", in: store)
        #expect(try Self.exported("empty", from: store, into: directory) == Data())
    }

    @Test func aLegacyFileDecryptsWithTheSingleKeyAndWithAKeyRing() throws {
        let directory = try TemporaryDirectory()
        // The single `storage.quarantineKey`, as the configuration presents it: key id "default".
        let single = try Self.store(in: directory, keys: ["default": Self.legacyKey], active: "default")
        try Self.legacyFile.write(to: URL(fileURLWithPath: single.quarantinePath(transferId: Self.legacyTransferId)))
        #expect(try single.quarantineKeyId(transferId: Self.legacyTransferId) == nil)
        #expect(FileStore.isQuarantineFile(single.quarantinePath(transferId: Self.legacyTransferId)))
        #expect(try Self.exported(Self.legacyTransferId, from: single, into: directory) == Self.legacyPlaintext)

        // After rotation the old key has another id and is not active: the key is found by trying each one.
        let ring = try Self.store(in: directory, keys: ["2025": Self.legacyKey, "2026": Self.key(9), "a": Self.key(3)], active: "2026")
        #expect(try Self.exported(Self.legacyTransferId, from: ring, into: directory) == Self.legacyPlaintext)

        let rekeyed = try #require(try ring.reencryptQuarantined(transferId: Self.legacyTransferId))
        #expect(rekeyed.fromKeyId == "2025")
        #expect(rekeyed.sha256 == Self.legacySHA256)
        // Not replaced until asked: the old file is intact beside the new one.
        #expect(try Data(contentsOf: URL(fileURLWithPath: ring.quarantinePath(transferId: Self.legacyTransferId))) == Self.legacyFile)
        try ring.replaceQuarantined(transferId: Self.legacyTransferId, with: rekeyed)
        #expect(!FileManager.default.fileExists(atPath: rekeyed.temporaryPath))
        #expect(try ring.quarantineKeyId(transferId: Self.legacyTransferId) == "2026")

        // The retired key can go now.
        let newOnly = try Self.store(in: directory, keys: ["2026": Self.key(9)], active: "2026")
        #expect(try Self.exported(Self.legacyTransferId, from: newOnly, into: directory) == Self.legacyPlaintext)
    }

    @Test func aFileNoConfiguredKeyOpensSaysWhichKeyIsMissing() throws {
        let directory = try TemporaryDirectory()
        let store = try Self.store(in: directory, keys: ["a": Self.key(1)], active: "a")
        try Self.quarantine(Data("held\n".utf8), as: "named", in: store)
        try Self.legacyFile.write(to: URL(fileURLWithPath: store.quarantinePath(transferId: Self.legacyTransferId)))
        let other = try Self.store(in: directory, keys: ["b": Self.key(2)], active: "b")

        let named = #expect(throws: StoreError.self) { try Self.exported("named", from: other, into: directory) }
        #expect("\(named!)".contains("quarantine key \"a\", which is not configured"))
        #expect(throws: StoreError.self) { try other.reencryptQuarantined(transferId: "named") }
        let legacy = #expect(throws: StoreError.self) { try Self.exported(Self.legacyTransferId, from: other, into: directory) }
        #expect("\(legacy!)".contains("none of the configured quarantine keys (b)"))
        // Nothing is left behind: no partial export, no temporary file, the originals untouched.
        let left = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasPrefix("export-") }
        #expect(left.isEmpty)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.quarantineDirectory).sorted() == [Self.legacyTransferId, "named"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: store.quarantinePath(transferId: Self.legacyTransferId))) == Self.legacyFile)
    }

    @Test func theKeyIdInTheHeaderIsAuthenticated() throws {
        // Two ids for the same key bytes: relabelling a file's key id must still fail, because the id is part of
        // every chunk's additional data.
        let directory = try TemporaryDirectory()
        let store = try Self.store(in: directory, keys: ["k1": Self.key(5), "k2": Self.key(5)], active: "k1")
        try Self.quarantine(Data("label\n".utf8), as: "t", in: store)
        let path = store.quarantinePath(transferId: "t")
        var raw = try Data(contentsOf: URL(fileURLWithPath: path))
        raw.replaceSubrange(5..<7, with: Data("k2".utf8))
        try raw.write(to: URL(fileURLWithPath: path))
        #expect(try store.quarantineKeyId(transferId: "t") == "k2")
        let error = #expect(throws: StoreError.self) { try Self.exported("t", from: store, into: directory) }
        #expect("\(error!)".contains("does not decrypt"))

        // Moved to another transfer id: refused too.
        try Self.quarantine(Data("moved\n".utf8), as: "source", in: store)
        try FileManager.default.copyItem(atPath: store.quarantinePath(transferId: "source"), toPath: store.quarantinePath(transferId: "target"))
        #expect(throws: StoreError.self) { try Self.exported("target", from: store, into: directory) }
    }

    @Test func exclusiveCreationRefusesFilesAndLinksAndSetsMode0600() throws {
        let directory = try TemporaryDirectory()
        let existing = try directory.write("existing", Data("keep me".utf8))
        let target = try directory.write("target", Data("the link's target".utf8))
        let link = directory.file("link")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        let dangling = directory.file("dangling")
        try FileManager.default.createSymbolicLink(atPath: dangling, withDestinationPath: directory.file("nowhere"))
        for path in [existing, link, dangling, directory.path] {
            #expect(throws: StoreError.self, "\(path)") { try FileStore.createExclusiveFile(path) }
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: existing)) == Data("keep me".utf8))
        #expect(try Data(contentsOf: URL(fileURLWithPath: target)) == Data("the link's target".utf8))
        #expect(!FileManager.default.fileExists(atPath: directory.file("nowhere")))

        let fresh = directory.file("fresh")
        try FileStore.createExclusiveFile(fresh).close()
        let mode = try FileManager.default.attributesOfItem(atPath: fresh)[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }
}
