public import LibMagic

/// Everything the pipeline learned about one file.
public struct InspectionReport: Sendable, Equatable {
    /// The file's size in bytes.
    public var size: Int64
    /// The SHA-256 of the content, lowercase hex; nil when the file could not be read.
    public var sha256: String?
    /// The type libmagic detected; nil when detection failed.
    public var detectedType: FileType?
    /// The verdict: only `clean` is ever served.
    public var verdict: Verdict
    /// Whether the verdict says the scanner process died or overran its time limit on this content (remembered for
    /// its digest: see ``ParserReport/scannerFailure``).
    public var scannerFailure: Bool
    /// The version of the signatures that scanned it; nil when none did (the file could not be read, say).
    public var signatureVersion: String?

    /// Creates a report.
    public init(size: Int64, sha256: String?, detectedType: FileType?, verdict: Verdict, scannerFailure: Bool = false, signatureVersion: String? = nil) {
        self.size = size
        self.sha256 = sha256
        self.detectedType = detectedType
        self.verdict = verdict
        self.scannerFailure = scannerFailure
        self.signatureVersion = signatureVersion
    }
}
