import CAirlockSandbox
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

extension UUID {
    /// A random (version 4) UUID drawn from the system's generator (`getrandom`).
    ///
    /// Foundation's `UUID()` on Linux opens, reads and closes `/dev/urandom` for each one: three system calls, and a
    /// hand-off makes three UUIDs (transfer, staging file, token).
    static func random() -> UUID {
        let (high, low) = Self.randomBits()
        return Self.stamped(version: 4, high: high, low: low)
    }

    /// A time-ordered (version 7, RFC 9562) UUID: the Unix time in milliseconds, then 74 random bits.
    ///
    /// For the ledger's keys (transfer and token ids): UUIDs made one after another sort one after another, so a
    /// group of hand-offs appends to the same few B-tree pages of each index instead of dirtying a random page per
    /// row and index (each one more page written to the write-ahead log, and again at the checkpoint). They reveal
    /// when they were made, which the records they name say anyway; 74 random bits keep them unguessable.
    static func timeOrdered(at date: Date) -> UUID {
        let milliseconds = UInt64(max(0, (date.timeIntervalSince1970 * 1000).rounded(.down)))
        let (random, low) = Self.randomBits()
        return Self.stamped(version: 7, high: (milliseconds << 16) | (random & 0xFFFF), low: low)
    }

    /// 128 random bits in one `getrandom` (`SystemRandomNumberGenerator` makes a call per 64 bits).
    private static func randomBits() -> (UInt64, UInt64) {
        var bits: (UInt64, UInt64) = (0, 0)
        let result = withUnsafeMutableBytes(of: &bits) { airlock_random_bytes($0.baseAddress, $0.count) }
        // getrandom cannot fail once the kernel's pool is ready; the standard library's generator traps rather than
        // return fewer random bits, and so does this.
        guard result == 0 else { fatalError("getrandom failed: \(String(cString: strerror(errno)))") }
        return bits
    }

    /// The UUID of these 128 bits, with `version` and the RFC 4122 variant set.
    private static func stamped(version: UInt8, high: UInt64, low: UInt64) -> UUID {
        var bytes = (high.bigEndian, low.bigEndian)
        return withUnsafeMutableBytes(of: &bytes) { raw in
            raw[6] = (raw[6] & 0x0F) | (version << 4)
            raw[8] = (raw[8] & 0x3F) | 0x80  // RFC 4122 variant
            return UUID(
                uuid: (
                    raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
                    raw[8], raw[9], raw[10], raw[11], raw[12], raw[13], raw[14], raw[15]
                )
            )
        }
    }
}
