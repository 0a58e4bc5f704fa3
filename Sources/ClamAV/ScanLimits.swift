/// The limits a ``ClamAVEngine`` applies to every scan; exceeding one never yields a clean result.
public struct ScanLimits: Sendable, Equatable {
    /// Largest file (or archive member) scanned, in bytes.
    public var maxFileSize: Int
    /// Most bytes scanned in total for one file, archive members included.
    public var maxScanSize: Int
    /// Deepest archive nesting followed.
    public var maxRecursion: Int
    /// Most files inside one archive scanned.
    public var maxFiles: Int
    /// Longest time one scan may take.
    public var maxScanTime: Duration

    /// Creates limits; the defaults are libclamav's own.
    public init(
        maxFileSize: Int = 100 << 20,
        maxScanSize: Int = 400 << 20,
        maxRecursion: Int = 16,
        maxFiles: Int = 10_000,
        maxScanTime: Duration = .seconds(120)
    ) {
        self.maxFileSize = maxFileSize
        self.maxScanSize = maxScanSize
        self.maxRecursion = maxRecursion
        self.maxFiles = maxFiles
        self.maxScanTime = maxScanTime
    }

    var maxScanTimeMilliseconds: Int64 {
        let (seconds, attoseconds) = self.maxScanTime.components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
