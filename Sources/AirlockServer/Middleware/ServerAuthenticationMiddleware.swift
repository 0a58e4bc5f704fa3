import AirlockCore
import Crypto
import Foundation
import Hummingbird
import NIOSSL
import SwiftASN1
import X509

/// Authenticates IM servers and records the server's name in the request context.
///
/// Without mutual TLS an IM server is known by its bearer API key (compared in constant time). With
/// `http.tls.clientCAFile` it is known by its client certificate, which must carry a name of exactly one configured
/// server (`servers.NAME.certificateNames`); an API key sent as well must belong to that same server.
struct ServerAuthenticationMiddleware: RouterMiddleware {
    typealias Context = AirlockRequestContext
    /// The credentials of the servers configured now (`servers` is reloaded without a restart).
    let credentials: Derived<ServerCredentials>
    /// Whether IM servers must present a client certificate (`http.tls.clientCAFile`; mutual TLS).
    let mutualTLS: Bool

    init(live: LiveConfiguration, mutualTLS: Bool) {
        self.credentials = Derived(live) { ServerCredentials($0.servers) }
        self.mutualTLS = mutualTLS
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var presentedKey: String?
        if let authorization = request.headers[.authorization] {
            guard let key = Self.bearerCredentials(authorization) else {
                throw APIError(.unauthorized, "unauthorized", "send the API key as Authorization: Bearer <servers.NAME.apiKey>")
            }
            presentedKey = key
        }
        let server: String
        let credentials = self.credentials.current
        if self.mutualTLS {
            // The TLS handshake already validated any certificate presented against clientCAFile.
            guard let certificate = try? await context.channel.nioSSL_peerCertificate().get() else {
                throw APIError(.forbidden, "client_certificate_required", "this API requires a client certificate signed by http.tls.clientCAFile")
            }
            server = try credentials.server(certificateNames: CertificateNames.of(certificate), apiKey: presentedKey)
        } else {
            guard let presentedKey else {
                throw APIError(.unauthorized, "unauthorized", "missing API key: send Authorization: Bearer <servers.NAME.apiKey>")
            }
            guard let match = credentials.server(apiKey: presentedKey) else {
                throw APIError(.unauthorized, "unauthorized", "unknown API key")
            }
            server = match
        }
        var context = context
        context.server = server
        return try await next(request, context)
    }

    /// What follows `Bearer ` (the scheme in any case), without the spaces and tabs around it; nil for another
    /// scheme. Byte by byte: Foundation's lowercasing and trimming cost more than the rest of the check.
    static func bearerCredentials(_ authorization: String) -> String? {
        let bytes = authorization.utf8
        guard bytes.count >= 7, zip(bytes.prefix(7), "bearer ".utf8).allSatisfy({ $0 | ($0 >= 0x41 && $0 <= 0x5A ? 0x20 : 0) == $1 })
        else { return nil }
        let isBlank = { (scalar: Unicode.Scalar) in scalar == "\t" || scalar.properties.generalCategory == .spaceSeparator }
        let scalars = authorization.unicodeScalars.dropFirst(7).drop(while: isBlank)
        var end = scalars.endIndex
        while end > scalars.startIndex, isBlank(scalars[scalars.index(before: end)]) {
            end = scalars.index(before: end)
        }
        return String(String.UnicodeScalarView(scalars[..<end]))
    }
}

/// The IM servers' credentials: API keys by digest, certificate names by server.
struct ServerCredentials: Sendable {
    /// SHA-256 of each key, so comparisons take the same time whatever the key's length.
    private let keys: [(server: String, digest: Data)]
    private let certificateNames: [(server: String, names: Set<String>)]

    init(_ servers: [String: AirlockConfiguration.Server]) {
        let sorted = servers.sorted { $0.key < $1.key }
        self.keys = sorted.flatMap { name, server in server.apiKeys.map { (name, Data(SHA256.hash(data: Data($0.utf8)))) } }
        self.certificateNames = sorted.map { ($0.key, Set($0.value.certificateNames.map { $0.lowercased() })) }
    }

    /// The server an API key belongs to, compared against every key without stopping early.
    func server(apiKey: String) -> String? {
        let presented = Data(SHA256.hash(data: Data(apiKey.utf8)))
        var match: String?
        for key in self.keys where ConstantTime.equal(key.digest, presented) {
            match = key.server
        }
        return match
    }

    /// The server a client certificate with `names` (DNS names, else its CN) identifies; `apiKey`, when sent, must
    /// be one of that server's.
    ///
    /// - Throws: ``APIError`` 403 when the names identify no server or several, or the key is another server's.
    func server(certificateNames names: [String], apiKey: String?) throws -> String {
        let presented = Set(names.map { $0.lowercased() })
        let matches = self.certificateNames.filter { !$0.names.isDisjoint(with: presented) }.map(\.server)
        guard matches.count == 1, let server = matches.first else {
            let shown = names.isEmpty ? "no DNS name or CN" : names.sorted().joined(separator: ", ")
            throw APIError(
                .forbidden,
                "certificate_not_bound",
                matches.isEmpty
                    ? "the client certificate (\(shown)) names no configured server: add its name to servers.NAME.certificateNames"
                    : "the client certificate (\(shown)) names several servers (\(matches.joined(separator: ", "))): give each its own certificate"
            )
        }
        if let apiKey, self.server(apiKey: apiKey) != server {
            throw APIError(.forbidden, "api_key_mismatch", "the API key does not belong to the server the client certificate names (\(server))")
        }
        return server
    }
}

/// The names a client certificate identifies its holder by.
enum CertificateNames {
    /// The subjectAltName DNS names, else the subject's common names; empty when the certificate cannot be parsed.
    static func of(_ certificate: NIOSSLCertificate) -> [String] {
        guard let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der) else { return [] }
        return Self.of(parsed)
    }

    static func of(_ certificate: Certificate) -> [String] {
        var names: [String] = []
        if let alternatives = try? certificate.extensions.subjectAlternativeNames {
            for case .dnsName(let name) in alternatives {
                names.append(name)
            }
        }
        guard names.isEmpty else { return names }
        for relativeName in certificate.subject {
            for attribute in relativeName where attribute.type == .RDNAttributeType.commonName {
                if let name = String(attribute.value) { names.append(name) }
            }
        }
        return names
    }
}
