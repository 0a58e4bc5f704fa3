public import Crypto

extension Digest {
    /// The digest as lowercase hexadecimal.
    public var hexString: String {
        self.map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined()
    }
}
