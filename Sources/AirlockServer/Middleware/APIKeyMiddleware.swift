import AirlockCore
import Crypto
import Foundation
import Hummingbird
import NIOSSL

/// Authenticates IM servers by their bearer API key (compared in constant time) and records the server's name.
struct APIKeyMiddleware: RouterMiddleware {
    typealias Context = AirlockRequestContext
    /// SHA-256 of each key, so comparisons take the same time whatever the key's length.
    private let keys: [(server: String, digest: Data)]
    /// Whether IM servers must present a client certificate (`http.tls.clientCAFile`; mutual TLS).
    private let requireClientCertificate: Bool

    init(servers: [String: AirlockConfiguration.Server], requireClientCertificate: Bool) {
        self.requireClientCertificate = requireClientCertificate
        self.keys = servers.sorted { $0.key < $1.key }.map { ($0.key, Data(SHA256.hash(data: Data($0.value.apiKey.utf8)))) }
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if self.requireClientCertificate {
            // The TLS handshake already validated any certificate presented against clientCAFile.
            let certificate = try? await context.channel.nioSSL_peerCertificate().get()
            guard certificate != nil else {
                throw APIError(.forbidden, "client_certificate_required", "this API requires a client certificate signed by http.tls.clientCAFile")
            }
        }
        guard let authorization = request.headers[.authorization], authorization.lowercased().hasPrefix("bearer ") else {
            throw APIError(.unauthorized, "unauthorized", "missing API key: send Authorization: Bearer <servers.NAME.apiKey>")
        }
        let presented = Data(SHA256.hash(data: Data(authorization.dropFirst(7).trimmingCharacters(in: .whitespaces).utf8)))
        var match: String?
        // Compare against every key, without stopping early, in constant time per key.
        for key in self.keys where ConstantTime.equal(key.digest, presented) {
            match = key.server
        }
        guard let match else {
            throw APIError(.unauthorized, "unauthorized", "unknown API key")
        }
        var context = context
        context.server = match
        return try await next(request, context)
    }
}
