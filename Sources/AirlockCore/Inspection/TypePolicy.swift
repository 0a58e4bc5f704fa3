import Foundation

/// Decides from declared and detected MIME types whether a file is blocked (DESIGN §4 `policy`).
public struct TypePolicy: Sendable, Equatable {
    /// Detected types that are blocked; `family/*` matches a whole family.
    public var blockedTypes: [String]
    /// When not empty, only detected types matching one of these pass.
    public var allowedTypes: [String]
    /// Whether a harmless declared type over dangerous bytes is blocked.
    public var blockOnTypeMismatch: Bool

    /// Creates a policy.
    public init(blockedTypes: [String] = [], allowedTypes: [String] = [], blockOnTypeMismatch: Bool = true) {
        self.blockedTypes = blockedTypes.map(Self.normalize)
        self.allowedTypes = allowedTypes.map(Self.normalize)
        self.blockOnTypeMismatch = blockOnTypeMismatch
    }

    /// Creates the policy of a configuration.
    public init(_ configuration: AirlockConfiguration.Policy) {
        self.init(
            blockedTypes: configuration.blockedTypes,
            allowedTypes: configuration.allowedTypes,
            blockOnTypeMismatch: configuration.blockOnTypeMismatch
        )
    }

    /// The reason the file is blocked, or nil when policy lets it through to the scanner's verdict.
    ///
    /// - Parameters:
    ///   - declaredType: the `Content-Type` the sender declared, if any (parameters are ignored).
    ///   - detectedType: the MIME type libmagic detected.
    public func blockReason(declaredType: String?, detectedType: String) -> String? {
        let detected = Self.normalize(detectedType)
        if self.blockOnTypeMismatch, let declaredType, let category = Self.dangerousCategory(of: detected) {
            let declared = Self.normalize(declaredType)
            if declared != detected, Self.harmlessFamilies.contains(where: { declared.hasPrefix($0) }) {
                return "type mismatch: declared \(declared) but the content is \(category) (\(detected))"
            }
        }
        if Self.matches(detected, any: self.blockedTypes) {
            return "type \(detected) is blocked by policy"
        }
        if !self.allowedTypes.isEmpty, !Self.matches(detected, any: self.allowedTypes) {
            return "type \(detected) is not in policy.allowedTypes"
        }
        return nil
    }

    /// Declared families whose content must not be executable or active.
    static let harmlessFamilies = ["image/", "audio/", "video/", "text/"]

    /// Detected types that contradict a harmless declared family, by category.
    static let dangerousTypes: [String: String] = {
        var table: [String: String] = [:]
        for type in [
            "application/vnd.microsoft.portable-executable", "application/x-executable", "application/x-sharedlib",
            "application/x-pie-executable", "application/x-mach-binary", "application/x-elf", "application/x-msi",
            "application/x-ms-installer", "application/java-archive", "application/x-java-applet",
        ] {
            table[type] = "an executable"
        }
        for type in [
            "text/x-shellscript", "application/x-shellscript", "text/x-python", "text/x-script.python", "text/x-perl",
            "text/x-php", "application/x-php", "text/x-msdos-batch", "application/javascript", "text/javascript",
            "application/x-powershell", "text/x-ruby", "text/x-tcl", "text/x-lua", "text/x-awk", "application/hta",
            "text/html", "image/svg+xml",
        ] {
            table[type] = "a script"
        }
        for type in [
            "application/zip", "application/x-7z-compressed", "application/x-rar", "application/vnd.rar",
            "application/x-rar-compressed", "application/gzip", "application/x-gzip", "application/x-bzip2",
            "application/x-xz", "application/x-tar", "application/x-cpio", "application/vnd.ms-cab-compressed",
            "application/x-archive", "application/x-iso9660-image", "application/x-lzip", "application/zstd",
            "application/x-lzma", "application/x-arj", "application/x-lha", "application/x-compress",
        ] {
            table[type] = "an archive"
        }
        for type in [
            "application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint", "application/vnd.ms-office",
            "application/x-ole-storage", "application/cdfv2", "application/vnd.ms-word.document.macroenabled.12",
            "application/vnd.ms-excel.sheet.macroenabled.12", "application/vnd.ms-powerpoint.presentation.macroenabled.12",
            "application/rtf", "text/rtf",
        ] {
            table[type] = "a document that can carry macros"
        }
        return table
    }()

    static func dangerousCategory(of detected: String) -> String? {
        Self.dangerousTypes[detected]
    }

    static func normalize(_ type: String) -> String {
        // What `trimmingCharacters(in: .whitespaces)` trims (tab and the space separators), without Foundation's
        // character sets: this runs on every hand-off.
        func isSpace(_ scalar: Unicode.Scalar) -> Bool {
            scalar == " " || scalar == "\t" || (!scalar.isASCII && scalar.properties.generalCategory == .spaceSeparator)
        }
        let bare = type.split(separator: ";", maxSplits: 1).first ?? Substring(type)
        var scalars = bare.unicodeScalars[...]
        while let first = scalars.first, isSpace(first) { scalars.removeFirst() }
        while let last = scalars.last, isSpace(last) { scalars.removeLast() }
        return String(scalars).lowercased()
    }

    static func matches(_ type: String, any patterns: [String]) -> Bool {
        patterns.contains { pattern in
            pattern.hasSuffix("/*") ? type.hasPrefix(pattern.dropLast()) : type == pattern
        }
    }
}
