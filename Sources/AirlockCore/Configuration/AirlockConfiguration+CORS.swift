import Foundation

extension AirlockConfiguration {
    /// `http.cors`: browser-based XMPP clients (Converse.js, Movim) upload to XEP-0363 URLs and download from their
    /// own origin, which browsers allow only with CORS headers. The native hand-off API never gets them.
    public struct CORS: Sendable, Equatable {
        /// `http.cors.allowedOrigins` (array of strings, default `["*"]`): the origins, `scheme://host[:port]`, whose
        /// pages may upload and download on the XEP-0363 paths and `/v1/files/`, or `["*"]` for every origin. The
        /// URLs there are capabilities and no cookie is involved, so `*` gives a page nothing it does not already hold;
        /// an empty list lets no page in. Held as browsers send `Origin`: lower case, without the scheme's default port.
        public var allowedOrigins: [String]

        /// The value that allows every origin.
        public static let everyOrigin = "*"

        /// Whether every origin is allowed (`["*"]`).
        public var allowsEveryOrigin: Bool { self.allowedOrigins.contains(Self.everyOrigin) }

        /// `text` as a browser serialises an origin (lower case, the scheme's default port left out), or `*`
        /// itself; nil when `text` is not `scheme://host[:port]` (a path, even `/`, a query, user information or a
        /// host that is not ASCII: browsers send an internationalised host in its `xn--` form).
        public static func origin(_ text: String) -> String? {
            if text == Self.everyOrigin { return text }
            guard let separator = text.range(of: "://") else { return nil }
            let scheme = text[..<separator.lowerBound].lowercased()
            let authority = text[separator.upperBound...].lowercased()
            guard let first = scheme.first, first.isASCII, first.isLetter,
                scheme.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "+-.".contains($0)) })
            else { return nil }
            let host: Substring
            let port: Substring?
            if authority.hasPrefix("[") {
                // An IPv6 address: [hex digits, ':' and '.'].
                guard let close = authority.firstIndex(of: "]") else { return nil }
                host = authority[...close]
                let address = host.dropFirst().dropLast()
                guard !address.isEmpty, address.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return nil }
                let rest = authority[authority.index(after: close)...]
                guard rest.isEmpty || rest.first == ":" else { return nil }
                port = rest.isEmpty ? nil : rest.dropFirst()
            } else {
                let parts = authority.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
                host = parts[0]
                port = parts.count == 2 ? parts[1] : nil
                let labels = host.split(separator: ".", omittingEmptySubsequences: false)
                guard
                    labels.allSatisfy({ label in
                        !label.isEmpty && label.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }
                    })
                else { return nil }
            }
            guard let port else { return "\(scheme)://\(host)" }
            guard !port.isEmpty, port.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int(port), (1...65535).contains(number) else {
                return nil
            }
            let isDefault = (scheme == "http" && number == 80) || (scheme == "https" && number == 443)
            return isDefault ? "\(scheme)://\(host)" : "\(scheme)://\(host):\(number)"
        }
    }
}

extension AirlockConfiguration.CORS {
    init(_ reader: inout ConfigurationReader) throws {
        let key = "http.cors.allowedOrigins"
        var origins: [String] = []
        for entry in try reader.strings(key, default: [Self.everyOrigin]) {
            guard let origin = Self.origin(entry.trimmingCharacters(in: .whitespaces)) else {
                throw ConfigurationError(
                    key: key,
                    message: """
                        holds "\(entry)", which is not an origin: write each as a browser sends it, scheme://host[:port] \
                        with no path or trailing slash (e.g. "https://chat.example.org"), or give ["*"] for every origin
                        """
                )
            }
            if !origins.contains(origin) { origins.append(origin) }
        }
        if origins.contains(Self.everyOrigin), origins.count > 1 {
            throw ConfigurationError(
                key: key,
                message: #"lists "*" (every origin) together with single origins: give ["*"] alone, or only your web clients' origins"#
            )
        }
        self.allowedOrigins = origins
    }
}
