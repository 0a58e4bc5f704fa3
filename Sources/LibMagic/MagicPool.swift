import Synchronization

/// A thread-safe pool of libmagic handles: each call borrows a handle for itself alone.
public final class MagicPool: Sendable {
    private let idle: Mutex<[MagicHandleBox]>
    /// The databases of the first pass (``TypeDetection/mimeEntriesFirst``); nil when it is off.
    private let firstPassDatabases: MagicDatabases?
    /// Headers of known types, which skip the first pass.
    private let knownHeaders: KnownHeaders
    private let firstPassTries = Atomic<Int>(0)
    private let firstPassAnswers = Atomic<Int>(0)

    /// Whether the first pass is on, and with how many entries, or why not: for the start-up log.
    public let typeDetection: String

    /// How many bytes from the start of a file are enough to identify it.
    public static let sniffLength = 1 << 20

    /// How a pool finds MIME types.
    public enum TypeDetection: Sendable {
        /// libmagic's default database alone: what `file --mime-type` says.
        case wholeDatabase
        /// First the entries of the default database that can print a MIME type, which answer bytes that are
        /// neither text nor any known type at about half the cost; everything else from the whole database. The
        /// MIME types are the same as ``wholeDatabase``'s (see `MimeEntries`); it falls back to ``wholeDatabase``
        /// when a local magic file or an unknown database format makes that unsure.
        case mimeEntriesFirst
    }

    /// Creates a pool, loading its first handles now so that a broken libmagic installation fails at start-up.
    public init(detection: TypeDetection = .mimeEntriesFirst) throws(MagicError) {
        let whole = try MagicHandle()
        var firstPass: MagicHandle?
        var firstPassDatabases: MagicDatabases?
        var knownHeaders = KnownHeaders([])
        switch detection {
        case .wholeDatabase:
            self.typeDetection = "whole database"
        case .mimeEntriesFirst:
            switch MimeEntries.derive() {
            case .success(let entries):
                let databases = MagicDatabases(entries.databases)
                let handle = try MagicHandle(databases: databases)
                if let mismatch = Self.selfCheck(whole: whole, firstPass: handle) {
                    self.typeDetection = "whole database (the first pass disagreed on \(mismatch))"
                } else {
                    firstPass = handle
                    firstPassDatabases = databases
                    knownHeaders = entries.knownHeaders
                    self.typeDetection = "first pass on \(entries.keptEntries) of \(entries.totalEntries) entries, then whole database"
                }
            case .failure(let unavailable):
                self.typeDetection = "whole database (\(unavailable.reason))"
            }
        }
        self.firstPassDatabases = firstPassDatabases
        self.knownHeaders = knownHeaders
        self.idle = Mutex([MagicHandleBox(whole: whole, firstPass: firstPass)])
    }

    /// Whether the first pass is in use.
    public var usesFirstPass: Bool {
        self.firstPassDatabases != nil
    }

    /// How many types the first pass answered alone since the pool was made.
    public var firstPassAnswerCount: Int {
        self.firstPassAnswers.load(ordering: .relaxed)
    }

    /// How many types the first pass was asked for since the pool was made (answered alone or not).
    public var firstPassTryCount: Int {
        self.firstPassTries.load(ordering: .relaxed)
    }

    /// Identifies the type of `bytes` (the start of a file, at most ``sniffLength`` bytes are needed).
    ///
    /// - Parameter describe: also produce the human description, which takes libmagic as long again.
    public func identify(_ bytes: UnsafeRawBufferPointer, describe: Bool = true) throws(MagicError) -> FileType {
        try self.withHandle { box throws(MagicError) in
            if !describe, let firstPass = box.firstPass, Self.hasBinaryBytes(bytes), !self.knownHeaders.match(bytes) {
                self.firstPassTries.add(1, ordering: .relaxed)
                // An error here (the derived database reaches trees the whole one would not) is not an answer.
                if (try? firstPass.isUntypedBinary(bytes)) == true {
                    self.firstPassAnswers.add(1, ordering: .relaxed)
                    return FileType(mimeType: "application/octet-stream", description: nil)
                }
            }
            return try box.whole.identify(bytes, describe: describe)
        }
    }

    /// Whether the first 4 KiB of `bytes` hold a control character that ASCII, UTF-8 and ISO-8859 text never has
    /// (libmagic's `encoding.c`). Text is typed by the whole database at once: the first pass could not answer it,
    /// and costs as much as for binary. A choice of cost alone (UTF-16 or EBCDIC text may hold such bytes): the
    /// first pass's own test for text (`charset=binary`) decides whether its answer stands.
    static func hasBinaryBytes(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.prefix(4096).contains { byte in byte <= 0x06 || (byte >= 0x0E && byte <= 0x1A) || (byte >= 0x1C && byte <= 0x1F) }
    }

    /// Lends a handle to `body`: one from the idle list, or a new one.
    fileprivate func withHandle<Result>(_ body: (MagicHandleBox) throws(MagicError) -> Result) throws(MagicError) -> Result {
        let borrowed = self.idle.withLock { $0.popLast() }
        let box =
            if let borrowed {
                borrowed
            } else {
                MagicHandleBox(
                    whole: try MagicHandle(),
                    firstPass: try self.firstPassDatabases.map { databases throws(MagicError) in try MagicHandle(databases: databases) }
                )
            }
        defer { self.idle.withLock { $0.append(box) } }
        return try body(box)
    }

    /// Samples of the types the policy depends on most, which the first pass must not take for untyped bytes:
    /// if it does, the derived database lost entries it needed, and the pool uses the whole database alone.
    private static func selfCheck(whole: MagicHandle, firstPass: MagicHandle) -> String? {
        for (name, sample) in MagicSamples.all {
            let answer = sample.withUnsafeBytes { bytes -> (String, Bool)? in
                guard let type = try? whole.identify(bytes, describe: false).mimeType,
                    let untyped = try? firstPass.isUntypedBinary(bytes)
                else { return nil }
                return (type, untyped)
            }
            guard let (type, untyped) = answer else { return "\(name): libmagic failed" }
            if untyped, type != "application/octet-stream" {
                return "\(name) (\(type))"
            }
        }
        return nil
    }
}

extension MagicPool {
    /// The human description of `bytes` alone, for a type already identified without one.
    public func describe(_ bytes: UnsafeRawBufferPointer) throws(MagicError) -> String {
        try self.withHandle { box throws(MagicError) in try box.whole.describe(bytes) }
    }
}

/// Carries a pair of handles in and out of the pool's lock.
///
/// Sendable because a handle is only ever in one place: in the idle list under the lock, or borrowed by the one
/// thread that popped it, which returns it when done.
private final class MagicHandleBox: @unchecked Sendable {
    let whole: MagicHandle
    let firstPass: MagicHandle?
    init(whole: MagicHandle, firstPass: MagicHandle?) {
        self.whole = whole
        self.firstPass = firstPass
    }
}
