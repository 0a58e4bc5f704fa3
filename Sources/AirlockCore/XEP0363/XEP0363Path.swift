/// An XEP-0363 upload address: the URL path after `xep0363.pathPrefix`, split into percent-decoded segments
/// (`slot/filename`, or ejabberd's `userhash/random/filename`).
public struct XEP0363Path: Sendable, Equatable {
    /// The decoded segments joined by `/`: the slot key in the ledger and the HMAC's `file_path`.
    public let path: String
    /// The decoded segments, at least two; none is empty, `.` or `..`, or holds `/`, NUL or a control character.
    public let segments: [String]

    /// The last segment: the uploaded file's name.
    public var filename: String { self.segments[self.segments.count - 1] }

    /// Why a path is not an upload address.
    public enum Error: Swift.Error, Equatable {
        /// The path does not start with the prefix: 404.
        case outsidePrefix
        /// A segment is empty, `.`, `..`, badly percent-encoded, or decodes to `/`, NUL or a control character: 400.
        case invalidSegment
        /// Fewer than two segments, or a filename over 255 bytes: 400.
        case notSlotAndFilename
    }

    /// Parses the raw (still percent-encoded) request path under `prefix`, refusing names that could escape or
    /// confuse: empty segments, `.`, `..`, `/` (from `%2F`), NUL and control characters.
    public static func parse(_ rawPath: String, prefix: String) throws(Error) -> XEP0363Path {
        // Bytes and Unicode scalars, not Characters: a combining mark after `/` makes one Character that is not "/".
        guard rawPath.utf8.starts(with: prefix.utf8) else { throw .outsidePrefix }
        let encoded = rawPath.utf8.dropFirst(prefix.utf8.count).split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        var segments: [String] = []
        for part in encoded {
            guard let segment = Filename.percentDecoded(Substring(part)), !segment.isEmpty, segment != ".", segment != "..",
                !segment.unicodeScalars.contains("/"),
                !segment.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
            else {
                throw .invalidSegment
            }
            segments.append(segment)
        }
        guard segments.count >= 2, let filename = segments.last, filename.utf8.count <= Filename.maximumBytes else {
            throw .notSlotAndFilename
        }
        return XEP0363Path(path: segments.joined(separator: "/"), segments: segments)
    }
}
