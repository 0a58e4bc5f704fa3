import AirlockCore
import HTTPTypes
import Hummingbird

/// Lets browser-based XMPP clients (Converse.js, Movim) upload to XEP-0363 URLs and download from their own origin:
/// answers CORS preflights on the XEP-0363 paths and `/v1/files/`, and adds `Access-Control-*` headers to every
/// answer there, error answers included, so a page can read a 4xx.
///
/// `http.cors.allowedOrigins` decides which pages: `["*"]` (the default) lets every origin in with
/// `Access-Control-Allow-Origin: *`; a list echoes a listed origin (with `Vary: Origin`), and a preflight from any
/// other origin is refused with 403. Credentials are never allowed: the URLs are capabilities and no cookie is
/// involved. Every other path, the native hand-off API among them, gets no CORS header at all, so a preflight there
/// fails in the browser.
struct CORSMiddleware<Context: RequestContext>: RouterMiddleware {
    /// A path prefix browsers may use, and the methods a page may use there.
    struct Scope: Sendable {
        /// The path prefix, ending in `/`.
        let pathPrefix: String
        /// `Access-Control-Allow-Methods` on a preflight.
        let allowedMethods: String
        /// The `path` label of `airlock_refusals_total` for a refused preflight (`files`, `xep0363`).
        let kind: String
    }

    /// The prefix of the recipients' download paths (`GET`/`HEAD /v1/files/{token}`).
    static var downloadPathPrefix: String { "/v1/files/" }
    /// The request headers a page may send: `Authorization` for Prosody's JWT uploads, `Content-Type` for the
    /// declared type (and the v2 HMAC), `Range` for resumed downloads.
    static var allowedHeaders: String { "Authorization, Content-Type, Range" }
    /// The answer headers a page may read beyond the safelisted ones (the file's name, ranges, and when to retry an
    /// upload over a daily quota).
    static var exposedHeaders: String { "Accept-Ranges, Content-Disposition, Content-Length, Content-Range, Retry-After" }
    /// How long a browser may keep a preflight's answer (Chromium keeps at most two hours).
    static var maxAgeSeconds: Int { 7200 }

    let scopes: [Scope]
    let cors: AirlockConfiguration.CORS
    /// Counts refused preflights in `airlock_refusals_total`.
    let metrics: AirlockMetrics?

    /// CORS on `/v1/files/` (GET, HEAD) and, when XEP-0363 is enabled, on its path prefix (PUT, GET, HEAD).
    init(configuration: AirlockConfiguration, metrics: AirlockMetrics? = nil) {
        var scopes = [Scope(pathPrefix: Self.downloadPathPrefix, allowedMethods: "GET, HEAD, OPTIONS", kind: "files")]
        if configuration.xep0363.enabled {
            scopes.append(Scope(pathPrefix: configuration.xep0363.pathPrefix, allowedMethods: "PUT, GET, HEAD, OPTIONS", kind: "xep0363"))
        }
        self.scopes = scopes
        self.cors = configuration.http.cors
        self.metrics = metrics
    }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let scope = self.scopes.first(where: { request.uri.path.hasPrefix($0.pathPrefix) }) else {
            return try await next(request, context)
        }
        let origin = request.headers[.origin]
        if request.method == .options, let origin, request.headers[.accessControlRequestMethod] != nil {
            return try self.preflight(from: origin, scope: scope)
        }
        let headers = self.headers(for: origin)
        do {
            var response = try await next(request, context)
            response.headers.append(contentsOf: headers)
            return response
        } catch var error as APIError {
            error.headers.append(contentsOf: headers)
            throw error
        }
    }

    /// The answer to a preflight: 204 with what the page may do, or 403 for an origin not allowed.
    private func preflight(from origin: String, scope: Scope) throws -> Response {
        guard let allowed = self.allowedOrigin(origin) else {
            self.metrics?.countRefusal(path: scope.kind, reason: "origin_not_allowed", status: 403, upload: false)
            var error = APIError(
                .forbidden,
                "origin_not_allowed",
                "pages from this origin may not use this path: add \"\(origin)\" to http.cors.allowedOrigins to let a web client served from it upload and download"
            )
            error.headers[.vary] = "Origin"
            throw error
        }
        var headers: HTTPFields = [
            .accessControlAllowOrigin: allowed,
            .accessControlAllowMethods: scope.allowedMethods,
            .accessControlAllowHeaders: Self.allowedHeaders,
            .accessControlMaxAge: String(Self.maxAgeSeconds),
        ]
        if !self.cors.allowsEveryOrigin {
            headers[.vary] = "Origin"
        }
        return Response(status: .noContent, headers: headers)
    }

    /// The CORS headers of an answer to a request from `origin` (nil for requests without one).
    ///
    /// With `*` they do not depend on the origin, so every answer carries them; with a list the answer varies by
    /// origin (`Vary: Origin`, for caches), and only a listed origin gets `Access-Control-Allow-Origin`.
    private func headers(for origin: String?) -> HTTPFields {
        var headers: HTTPFields = [:]
        if !self.cors.allowsEveryOrigin {
            headers[.vary] = "Origin"
        }
        if let allowed = self.cors.allowsEveryOrigin ? AirlockConfiguration.CORS.everyOrigin : origin.flatMap(self.allowedOrigin) {
            headers[.accessControlAllowOrigin] = allowed
            headers[.accessControlExposeHeaders] = Self.exposedHeaders
        }
        return headers
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`: `*`, the origin itself when it is
    /// listed, or nil when it is not.
    private func allowedOrigin(_ origin: String) -> String? {
        if self.cors.allowsEveryOrigin { return AirlockConfiguration.CORS.everyOrigin }
        guard let normalized = AirlockConfiguration.CORS.origin(origin), normalized != AirlockConfiguration.CORS.everyOrigin,
            self.cors.allowedOrigins.contains(normalized)
        else { return nil }
        return origin
    }
}
