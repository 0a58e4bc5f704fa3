public import Foundation

/// Comparisons of secrets that take the same time wherever the inputs differ.
public enum ConstantTime {
    /// Whether `a` and `b` hold the same bytes; only their lengths can be told from the time taken.
    public static func equal(_ a: Data, _ b: Data) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for (x, y) in zip(a, b) {
            difference |= x ^ y
        }
        return difference == 0
    }
}
