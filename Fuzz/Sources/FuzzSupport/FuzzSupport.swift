public import Foundation
import Synchronization

/// Stops the fuzzer with `message` when an invariant does not hold: libFuzzer records the input as a crash.
public func invariant(_ condition: Bool, _ message: @autoclosure () -> String, file: StaticString = #file, line: UInt = #line) {
    if !condition {
        fatalError("invariant violated: \(message())", file: file, line: line)
    }
}

/// Runs async work to completion from libFuzzer's synchronous callback.
public func runBlocking<T: Sendable>(_ body: @escaping @Sendable () async -> T) -> T {
    let result = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        let value = await body()
        result.value.withLock { $0 = value }
        done.signal()
    }
    done.wait()
    guard let value = result.value.withLock({ $0 }) else {
        fatalError("the task signalled without a result")
    }
    return value
}

private final class ResultBox<T: Sendable>: Sendable {
    let value = Mutex<T?>(nil)
}

/// Reads a fuzzer's input piece by piece: bytes, then text up to a separator.
public struct FuzzInput {
    private var bytes: ArraySlice<UInt8>

    /// Wraps the bytes libFuzzer passed in.
    public init(_ start: UnsafePointer<UInt8>, _ count: Int) {
        self.bytes = ArraySlice(UnsafeBufferPointer(start: start, count: count))
    }

    /// Whether every byte was read.
    public var isEmpty: Bool { self.bytes.isEmpty }

    /// The next byte, or 0 at the end.
    public mutating func byte() -> UInt8 {
        self.bytes.popFirst() ?? 0
    }

    /// The bytes up to (not including) the next `separator`, which is consumed; all the rest when there is none.
    public mutating func field(until separator: UInt8 = 0x0A) -> [UInt8] {
        guard let index = self.bytes.firstIndex(of: separator) else {
            return self.rest()
        }
        let field = Array(self.bytes[..<index])
        self.bytes = self.bytes[(index + 1)...]
        return field
    }

    /// Every remaining byte.
    public mutating func rest() -> [UInt8] {
        defer { self.bytes = [] }
        return Array(self.bytes)
    }
}

/// Text from fuzzer bytes, invalid UTF-8 repaired (as Hummingbird does for request paths and queries).
public func text(_ bytes: [UInt8]) -> String {
    String(decoding: bytes, as: UTF8.self)
}

/// Unpadded base64url (RFC 4648 §5), the encoding of compact JWT parts.
public enum Base64URL {
    /// Encodes without padding.
    public static func encode(_ data: some Sequence<UInt8>) -> String {
        Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Decodes canonical unpadded base64url only: nil for any other alphabet, padding, or non-zero spare bits.
    public static func decodeStrictly(_ text: Substring) -> Data? {
        guard text.utf8.allSatisfy({ $0.isBase64URLDigit }), text.utf8.count % 4 != 1 else { return nil }
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        base64 += String(repeating: "=", count: (4 - base64.utf8.count % 4) % 4)
        guard let data = Data(base64Encoded: base64), Self.encode(data) == text else { return nil }
        return data
    }
}

extension UInt8 {
    fileprivate var isBase64URLDigit: Bool {
        (self >= 0x41 && self <= 0x5A) || (self >= 0x61 && self <= 0x7A) || (self >= 0x30 && self <= 0x39) || self == 0x2D || self == 0x5F
    }
}
