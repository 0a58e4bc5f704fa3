/// Strings that go into JSON as they are, with no escaping: printable ASCII other than `"` and `\\`. JSON for
/// such strings is written directly on the hand-off's path (``TransferDocument/json()``, ``AuditLog``); anything
/// else goes through `JSONEncoder`.
enum PlainJSON {
    static func isPlain(_ text: String) -> Bool {
        text.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") }
    }
}
