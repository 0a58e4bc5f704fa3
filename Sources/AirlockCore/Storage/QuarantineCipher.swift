import Crypto
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Streams a file through AES-GCM in 1 MiB chunks, so quarantined bytes are never readable (or executable) at rest.
///
/// Format: the magic `ALQ1`, then per chunk a 4-byte big-endian plaintext length, a 12-byte nonce, the ciphertext
/// and the 16-byte tag. Each chunk's additional data binds it to the transfer id, its index and whether it is the
/// last, so chunks cannot be reordered, dropped, truncated or moved to another transfer.
struct QuarantineCipher {
    let key: SymmetricKey
    static let magic = Array("ALQ1".utf8)
    static let chunkSize = 1 << 20

    func encrypt(from source: String, to destination: String, transferId: String) throws {
        let input = try FileHandle(forReadingFrom: URL(fileURLWithPath: source))
        defer { try? input.close() }
        let output = try Self.createPrivateFile(destination)
        defer { try? output.close() }
        try output.write(contentsOf: Self.magic)
        var index: UInt64 = 0
        var chunk = try input.read(upToCount: Self.chunkSize) ?? Data()
        while true {
            let next = chunk.count == Self.chunkSize ? (try input.read(upToCount: Self.chunkSize) ?? Data()) : Data()
            let isLast = next.isEmpty
            let sealed = try AES.GCM.seal(chunk, using: self.key, authenticating: Self.associatedData(transferId, index, isLast))
            var header = Data()
            withUnsafeBytes(of: UInt32(chunk.count).bigEndian) { header.append(contentsOf: $0) }
            try output.write(contentsOf: header + Data(sealed.nonce) + sealed.ciphertext + sealed.tag)
            if isLast { break }
            chunk = next
            index += 1
        }
        try output.synchronize()
    }

    func decrypt(from source: String, to destination: String, transferId: String) throws {
        let input = try FileHandle(forReadingFrom: URL(fileURLWithPath: source))
        defer { try? input.close() }
        guard try input.read(upToCount: 4).map(Array.init) == Self.magic else {
            throw StoreError.corruptQuarantine(path: source)
        }
        let output = try Self.createPrivateFile(destination)
        defer { try? output.close() }
        var index: UInt64 = 0
        while let header = try input.read(upToCount: 4), header.count == 4 {
            let length = Int(header.reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
            guard length <= Self.chunkSize, let body = try input.read(upToCount: 12 + length + 16), body.count == 12 + length + 16 else {
                throw StoreError.corruptQuarantine(path: source)
            }
            let isLast = try length < Self.chunkSize || input.offset() == Self.size(of: input)
            do {
                let box = try AES.GCM.SealedBox(
                    nonce: AES.GCM.Nonce(data: body.prefix(12)),
                    ciphertext: body.dropFirst(12).prefix(length),
                    tag: body.suffix(16)
                )
                try output.write(contentsOf: try AES.GCM.open(box, using: self.key, authenticating: Self.associatedData(transferId, index, isLast)))
            } catch {
                throw StoreError.corruptQuarantine(path: source)
            }
            if isLast {
                // Durable before the caller may delete the encrypted original (release).
                try output.synchronize()
                return
            }
            index += 1
        }
        // The chunk marked last never came: the file was truncated.
        throw StoreError.corruptQuarantine(path: source)
    }

    private static func associatedData(_ transferId: String, _ index: UInt64, _ isLast: Bool) -> Data {
        Data("\(transferId)|\(index)|\(isLast ? 1 : 0)".utf8)
    }

    private static func size(of handle: FileHandle) throws -> UInt64 {
        let current = try handle.offset()
        let end = try handle.seekToEnd()
        try handle.seek(toOffset: current)
        return end
    }

    private static func createPrivateFile(_ path: String) throws -> FileHandle {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw StoreError.io(operation: "create \(path)", errno: errno) }
        return FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
    }
}
