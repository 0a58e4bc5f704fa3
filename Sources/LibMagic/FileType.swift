/// A file's type as libmagic detects it from its content.
public struct FileType: Sendable, Hashable {
    /// The MIME type, for example `image/png`.
    public var mimeType: String
    /// The human description, for example `PNG image data, 1 x 1, 8-bit/color RGBA, non-interlaced`; nil when
    /// it was not asked for (it costs libmagic as much again as the type).
    public var description: String?

    /// Creates a file type.
    public init(mimeType: String, description: String?) {
        self.mimeType = mimeType
        self.description = description
    }
}
