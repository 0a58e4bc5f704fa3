public import Crypto
import Foundation

extension Digest {
    /// The digest as lowercase hexadecimal.
    public var hexString: String {
        self.withUnsafeBytes { bytes in
            // Written straight into the string's storage: a hand-off formats two digests (its content's and its
            // audit entry's), and a string per byte joined afterwards cost more than the hashing.
            String(unsafeUninitializedCapacity: bytes.count * 2) { output in
                for (index, byte) in bytes.enumerated() {
                    output[index * 2] = hexDigits[Int(byte >> 4)]
                    output[index * 2 + 1] = hexDigits[Int(byte & 0x0F)]
                }
                return bytes.count * 2
            }
        }
    }
}

private let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
