import AirlockCore
import Logging
import Synchronization
import Testing

/// The broker's log handler writes what `StreamLogHandler` writes.
struct LogHandlerTests {
    final class Lines: TextOutputStream, Sendable {
        private let text = Mutex("")
        func write(_ string: String) { self.text.withLock { $0 += string } }
        /// Each line without its timestamp (the first word).
        var lines: [String] {
            self.text.withLock { $0 }.split(separator: "\n").map { String($0.drop { $0 != " " }) }
        }
    }

    @Test
    func deferredMetadataIsWrittenAsTheStreamHandlerWritesIt() {
        let expected = Lines()
        let written = Lines()
        let plain = Logger(label: "airlock.test") { StreamLogHandler(label: $0, stream: expected, metadataProvider: nil) }
        let deferred = Logger(label: "airlock.test") {
            DeferredMetadataLogHandler(StreamLogHandler(label: $0, stream: written, metadataProvider: nil))
        }
        for index in 0..<2 {
            var logger = index == 0 ? plain : deferred
            logger.logLevel = .info
            logger.debug("below the level: not written")
            logger.info("no metadata")
            logger[metadataKey: "hb.request.id"] = "7f3a"
            logger[metadataKey: "transfer"] = "0b2c"
            logger.info("handler metadata")
            // The message's own metadata wins over the handler's for the same key.
            logger.warning("both", metadata: ["transfer": "override", "size": "8192"])
            logger[metadataKey: "transfer"] = nil
            #expect(logger[metadataKey: "transfer"] == nil)
            #expect(logger[metadataKey: "hb.request.id"] == "7f3a")
            logger.error("after removing one")
        }
        #expect(expected.lines.count == 4)
        #expect(written.lines == expected.lines)
        #expect(written.lines[2].contains("transfer=override"))
        #expect(!written.lines[2].contains("transfer=0b2c"))
    }
}
