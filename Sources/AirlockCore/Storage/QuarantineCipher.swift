import Crypto
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Streams a file through AES-GCM in 1 MiB chunks, so quarantined bytes are never readable (or executable) at rest.
///
/// Format `ALQ2` (written since quarantine keys rotate): the magic `ALQ2`, a 1-byte key-id length, the key id in
/// UTF-8, then per chunk a 4-byte big-endian plaintext length, a 12-byte nonce, the ciphertext and the 16-byte tag.
/// Each chunk's additional data binds it to the format, the key id, the transfer id, its index and whether it is the
/// last, so chunks cannot be reordered, dropped, truncated, moved to another transfer or relabelled with another key.
///
/// Format `ALQ1` (written before): the magic `ALQ1` and the same chunks, with additional data
/// `<transfer id>|<index>|<last>`. It does not name its key, so decryption tries every configured key on the first
/// chunk: AES-GCM's tag tells which one is right.
struct QuarantineCipher {
    /// Every configured key, by id.
    let keys: [String: SymmetricKey]
    /// The id of the key new files are encrypted with.
    let activeKeyId: String

    static let legacyMagic = Array("ALQ1".utf8)
    static let magic = Array("ALQ2".utf8)
    static let chunkSize = 1 << 20

    /// The key id an `ALQ2` file names, or nil for an `ALQ1` file (which does not say).
    ///
    /// - Throws: ``StoreError/corruptQuarantine(path:)`` when the file is neither format.
    static func keyId(ofFileAt path: String) throws -> String? {
        let input = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? input.close() }
        return try Self.readHeader(input, path: path)
    }

    /// Encrypts `source` to a new file at `destination` under the active key, and syncs it.
    func encrypt(from source: String, to destination: String, transferId: String) throws {
        let input = try FileHandle(forReadingFrom: URL(fileURLWithPath: source))
        defer { try? input.close() }
        let output = try Self.createFile(destination)
        defer { try? output.close() }
        let sealer = try self.sealer(for: output, transferId: transferId)
        var chunk = try input.read(upToCount: Self.chunkSize) ?? Data()
        var index: UInt64 = 0
        while true {
            let next = chunk.count == Self.chunkSize ? (try input.read(upToCount: Self.chunkSize) ?? Data()) : Data()
            try sealer.seal(chunk, index: index, isLast: next.isEmpty)
            if next.isEmpty { break }
            chunk = next
            index += 1
        }
        try output.synchronize()
    }

    /// Decrypts `source` into `output` (an open, empty file) and syncs it.
    ///
    /// - Returns: the id of the key that decrypted it.
    @discardableResult
    func decrypt(from source: String, into output: FileHandle, transferId: String) throws -> String {
        let keyId = try self.openChunks(of: source, transferId: transferId) { plaintext, _, _ in
            try output.write(contentsOf: plaintext)
        }
        // Durable before the caller may delete the encrypted original (release).
        try output.synchronize()
        return keyId
    }

    /// Decrypts `source` chunk by chunk and encrypts each chunk again under the active key into a new file at
    /// `destination`, which is synced; the plaintext never touches the disk.
    ///
    /// - Returns: the id of the key `source` was under, and the SHA-256 of the plaintext.
    func reencrypt(from source: String, to destination: String, transferId: String) throws -> (fromKeyId: String, sha256: String) {
        let output = try Self.createFile(destination)
        defer { try? output.close() }
        let sealer = try self.sealer(for: output, transferId: transferId)
        var hasher = SHA256()
        let fromKeyId = try self.openChunks(of: source, transferId: transferId) { plaintext, index, isLast in
            hasher.update(data: plaintext)
            try sealer.seal(plaintext, index: index, isLast: isLast)
        }
        try output.synchronize()
        return (fromKeyId, hasher.finalize().hexString)
    }

    // MARK: Chunks

    /// Writes the `ALQ2` header for the active key and seals chunks after it.
    private struct Sealer {
        let output: FileHandle
        let key: SymmetricKey
        let keyId: String
        let transferId: String

        func seal(_ chunk: Data, index: UInt64, isLast: Bool) throws {
            let additionalData = QuarantineCipher.associatedData(keyId: self.keyId, self.transferId, index, isLast)
            let sealed = try AES.GCM.seal(chunk, using: self.key, authenticating: additionalData)
            var header = Data()
            withUnsafeBytes(of: UInt32(chunk.count).bigEndian) { header.append(contentsOf: $0) }
            try self.output.write(contentsOf: header + Data(sealed.nonce) + sealed.ciphertext + sealed.tag)
        }
    }

    private func sealer(for output: FileHandle, transferId: String) throws -> Sealer {
        let idBytes = Array(self.activeKeyId.utf8)
        guard let key = self.keys[self.activeKeyId], (1...255).contains(idBytes.count) else {
            throw StoreError.unknownQuarantineKey(path: "storage.activeQuarantineKeyId", keyId: self.activeKeyId)
        }
        try output.write(contentsOf: Self.magic + [UInt8(idBytes.count)] + idBytes)
        return Sealer(output: output, key: key, keyId: self.activeKeyId, transferId: transferId)
    }

    /// Authenticates and decrypts every chunk of `source` in order, handing each plaintext to `body`.
    ///
    /// - Returns: the id of the key that opened the file.
    private func openChunks(of source: String, transferId: String, _ body: (Data, UInt64, Bool) throws -> Void) throws -> String {
        let input = try FileHandle(forReadingFrom: URL(fileURLWithPath: source))
        defer { try? input.close() }
        let namedKeyId = try Self.readHeader(input, path: source)
        // An ALQ2 file names its key; an ALQ1 file is tried with each key, the active one first.
        var candidates: [String]
        if let namedKeyId {
            guard self.keys[namedKeyId] != nil else { throw StoreError.unknownQuarantineKey(path: source, keyId: namedKeyId) }
            candidates = [namedKeyId]
        } else {
            candidates = [self.activeKeyId] + self.keys.keys.filter { $0 != self.activeKeyId }.sorted()
        }
        let size = try Self.size(of: input)
        var index: UInt64 = 0
        while let header = try input.read(upToCount: 4), header.count == 4 {
            let length = Int(header.reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
            guard length <= Self.chunkSize, let chunk = try input.read(upToCount: 12 + length + 16), chunk.count == 12 + length + 16 else {
                throw StoreError.corruptQuarantine(path: source)
            }
            let isLast = try length < Self.chunkSize || input.offset() == size
            let box: AES.GCM.SealedBox
            do {
                box = try AES.GCM.SealedBox(
                    nonce: AES.GCM.Nonce(data: chunk.prefix(12)),
                    ciphertext: chunk.dropFirst(12).prefix(length),
                    tag: chunk.suffix(16)
                )
            } catch {
                throw StoreError.corruptQuarantine(path: source)
            }
            guard let (keyId, plaintext) = self.openChunk(box, trying: candidates, namedKeyId: namedKeyId, transferId, index, isLast) else {
                // Only the first chunk of an ALQ1 file can fail for want of the right key; later chunks fail because
                // the file was altered.
                if index == 0 && namedKeyId == nil {
                    throw StoreError.noQuarantineKeyOpens(path: source, keyIds: candidates.sorted())
                }
                throw StoreError.corruptQuarantine(path: source)
            }
            candidates = [keyId]
            try body(plaintext, index, isLast)
            if isLast { return keyId }
            index += 1
        }
        // The chunk marked last never came: the file was truncated.
        throw StoreError.corruptQuarantine(path: source)
    }

    /// The first of `keyIds` whose key opens `box`, with the plaintext.
    private func openChunk(
        _ box: AES.GCM.SealedBox,
        trying keyIds: [String],
        namedKeyId: String?,
        _ transferId: String,
        _ index: UInt64,
        _ isLast: Bool
    ) -> (String, Data)? {
        for keyId in keyIds {
            guard let key = self.keys[keyId] else { continue }
            let additionalData =
                namedKeyId == nil
                ? Self.legacyAssociatedData(transferId, index, isLast) : Self.associatedData(keyId: keyId, transferId, index, isLast)
            if let plaintext = try? AES.GCM.open(box, using: key, authenticating: additionalData) {
                return (keyId, plaintext)
            }
        }
        return nil
    }

    /// Reads the magic (and, for `ALQ2`, the key id), leaving `input` at the first chunk.
    private static func readHeader(_ input: FileHandle, path: String) throws -> String? {
        let magic = try input.read(upToCount: 4).map(Array.init)
        if magic == Self.legacyMagic { return nil }
        guard magic == Self.magic, let length = try input.read(upToCount: 1)?.first, length > 0,
            let idBytes = try input.read(upToCount: Int(length)), idBytes.count == Int(length),
            let keyId = String(validating: idBytes, as: UTF8.self)
        else {
            throw StoreError.corruptQuarantine(path: path)
        }
        return keyId
    }

    /// `ALQ2|<key id length>:<key id>|<transfer id>|<index>|<last>`: length-prefixed, so no key id can pass for another.
    private static func associatedData(keyId: String, _ transferId: String, _ index: UInt64, _ isLast: Bool) -> Data {
        Data("ALQ2|\(keyId.utf8.count):\(keyId)|\(transferId)|\(index)|\(isLast ? 1 : 0)".utf8)
    }

    private static func legacyAssociatedData(_ transferId: String, _ index: UInt64, _ isLast: Bool) -> Data {
        Data("\(transferId)|\(index)|\(isLast ? 1 : 0)".utf8)
    }

    private static func size(of handle: FileHandle) throws -> UInt64 {
        let current = try handle.offset()
        let end = try handle.seekToEnd()
        try handle.seek(toOffset: current)
        return end
    }

    /// Creates (or empties) a 0600 file in the store's own 0700 directories; a symbolic link there is refused.
    private static func createFile(_ path: String) throws -> FileHandle {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw StoreError.io(operation: "create \(path)", errno: errno) }
        fchmod(descriptor, 0o600)
        return FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
    }
}
