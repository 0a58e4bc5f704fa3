public import Logging

/// A `StreamLogHandler` whose own metadata is kept as given and formatted only when a message is written.
///
/// `StreamLogHandler` formats its metadata each time it changes, and Hummingbird gives every request a logger with
/// its own `hb.request.id`: that formatting ran on every request (about 1 % of the broker's CPU per upload) and was
/// thrown away, since a busy broker logs at `error`. Output is the same as the wrapped handler's.
public struct DeferredMetadataLogHandler: LogHandler {
    private var base: StreamLogHandler
    public var metadata: Logger.Metadata = [:]

    /// Wraps `base`; its own metadata is replaced by this handler's.
    public init(_ base: StreamLogHandler) {
        self.base = base
        self.metadata = base.metadata
        self.base.metadata = [:]
    }

    public var logLevel: Logger.Level {
        get { self.base.logLevel }
        set { self.base.logLevel = newValue }
    }

    public var metadataProvider: Logger.MetadataProvider? {
        get { self.base.metadataProvider }
        set { self.base.metadataProvider = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var event = event
        if !self.metadata.isEmpty {
            // The message's own metadata wins over the handler's, as in StreamLogHandler.
            event.metadata = self.metadata.merging(event.metadata ?? [:]) { $1 }
        }
        self.base.log(event: event)
    }
}
