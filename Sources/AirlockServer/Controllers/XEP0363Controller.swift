import AirlockCore
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import JWTKit
import NIOCore

/// XEP-0363 external upload for Prosody (`mod_http_upload_external` v1/v2, `mod_http_file_share` JWT), Metronome
/// and prosody-filer (`token=`), and ejabberd (`mod_http_upload` `external_secret`), under `xep0363.pathPrefix`.
struct XEP0363Controller {
    let broker: Broker
    let metrics: AirlockMetrics
    let logger: Logger
    let files: FileResponder
    /// The XEP-0363 secret's verifiers, made again when a reload changes `xep0363.secret`.
    let secret: Derived<Verifiers>
    let prefix: String

    /// What checks an upload URL made with one secret.
    struct Verifiers: Sendable {
        let signature: XEP0363Signature
        /// JWTKit's key collection is an actor, filled asynchronously: made once per secret.
        let jwtKeys: Task<JWTKeyCollection, Never>

        init(secret: String) {
            self.signature = XEP0363Signature(secret: secret)
            let key = SymmetricKey(data: Data(secret.utf8))
            self.jwtKeys = Task {
                let keys = JWTKeyCollection()
                await keys.add(hmac: HMACKey(key: key), digestAlgorithm: .sha256)
                return keys
            }
        }
    }

    init(broker: Broker, metrics: AirlockMetrics, logger: Logger, files: FileResponder) {
        self.broker = broker
        self.metrics = metrics
        self.logger = logger
        self.files = files
        self.secret = Derived(broker.live) { Verifiers(secret: $0.xep0363.secret) }
        self.prefix = broker.configuration.xep0363.pathPrefix
    }

    var endpoints: RouteCollection<AirlockRequestContext> {
        let routes = RouteCollection(context: AirlockRequestContext.self)
        routes.add(middleware: RefusalMiddleware(kind: "xep0363", metrics: self.metrics, logger: self.logger))
        routes.put("**", use: self.upload)
        routes.get("**", use: self.download)
        routes.head("**", use: self.download)
        routes.methodNotAllowed("**", allowing: [.put, .get, .head])
        return routes
    }

    /// The upload path after the prefix (``XEP0363Path/parse(_:prefix:)``): 404 outside the prefix, 400 for an
    /// empty, `.`, `..` or invalid segment.
    func slotPath(of request: Request) throws -> XEP0363Path {
        do throws(XEP0363Path.Error) {
            return try XEP0363Path.parse(request.uri.path, prefix: self.prefix)
        } catch {
            switch error {
            case .outsidePrefix:
                throw APIError(.notFound, "not_found", "no such upload")
            case .invalidSegment:
                throw APIError(.badRequest, "invalid_path", "the upload path has an empty, '.', '..' or invalid segment")
            case .notSlotAndFilename:
                throw APIError(.badRequest, "invalid_path", "the upload path must be slot/filename")
            }
        }
    }

    struct FileShareClaims: JWTPayload {
        var slot: String
        var filename: String
        var filesize: Int
        var filetype: String?
        var exp: ExpirationClaim
        var sub: SubjectClaim?

        /// Expiry is checked by the caller, so that an expired token answers 410 rather than 401.
        func verify(using algorithm: some JWTAlgorithm) throws {}
    }

    /// `PUT {prefix}{slot}/{filename}`.
    @Sendable func upload(_ request: Request, context: AirlockRequestContext) async throws -> Response {
        let slot = try self.slotPath(of: request)
        // The filename's checks (bidirectional controls among them) before the signature or any body byte.
        _ = try Filename.served(from: slot.filename)
        let lengths = request.headers[values: .contentLength]
        guard lengths.count == 1, let length = Int(lengths[0]), length >= 0 else {
            throw APIError(.lengthRequired, "length_required", "a PUT needs a single, valid Content-Length")
        }
        let contentType = request.headers[.contentType]
        let uploader = try await self.authorize(request, slot: slot, length: length, contentType: contentType)

        try self.broker.checkAnnouncedLength(length)
        try await self.broker.checkSlotFree(slot.path)
        let handOff = HandOff(server: "xep0363", sender: uploader, recipients: [], filename: slot.filename, declaredType: contentType, slot: slot.path)
        try await self.broker.checkQuota(handOff, length: length)
        _ = try await TransferController.handOff(handOff, request: request, length: length, context: context, broker: self.broker, metrics: self.metrics)
        return Response(status: .created)
    }

    /// Checks the HMAC (v1, v2, `token=`) or the JWT, and returns the uploader: the JWT `sub`, else ejabberd's
    /// first path segment (`userhash/random/name`), else `unknown`.
    private func authorize(_ request: Request, slot: XEP0363Path, length: Int, contentType: String?) async throws -> String {
        if let authorization = request.headers[.authorization] {
            guard authorization.lowercased().hasPrefix("bearer ") else {
                throw APIError(.unauthorized, "invalid_token", "the Authorization header must be a Bearer token")
            }
            let token = String(authorization.dropFirst(7)).trimmingCharacters(in: .whitespaces)
            let claims: FileShareClaims
            do {
                claims = try await self.secret.current.jwtKeys.value.verify(token, as: FileShareClaims.self)
            } catch {
                throw APIError(.unauthorized, "invalid_token", "the upload token is not valid")
            }
            guard claims.exp.value > self.broker.now() else {
                throw APIError(.gone, "token_expired", "the upload token expired: request a new slot")
            }
            guard slot.segments.count == 2, claims.slot == slot.segments[0], claims.filename == slot.segments[1] else {
                throw APIError(.badRequest, "slot_mismatch", "the upload token is for another slot or filename")
            }
            guard claims.filesize == length else {
                throw APIError(.contentTooLarge, "size_mismatch", "Content-Length differs from the size in the upload token")
            }
            return claims.sub?.value ?? "unknown"
        }

        let query = request.uri.queryParameters
        guard let (version, presented) = XEP0363Signature.presented(v: query["v"], v2: query["v2"], token: query["token"]) else {
            throw APIError(.forbidden, "missing_signature", "the upload URL carries no v, v2 or token signature")
        }
        guard self.secret.current.signature.isValid(presented, version, path: slot.path, length: length, contentType: contentType) else {
            throw APIError(.forbidden, "bad_signature", "the upload signature does not match")
        }
        return slot.segments.count == 3 ? slot.segments[0] : "unknown"
    }

    /// `GET`/`HEAD {prefix}{slot}/{filename}`: clean files only (403 quarantined, 404 unknown or gone).
    @Sendable func download(_ request: Request, context: AirlockRequestContext) async throws -> Response {
        let slot = try self.slotPath(of: request)
        let authorized: Broker.AuthorizedDownload
        do {
            authorized = try await self.broker.authorizeDownload(.slot(slot.path))
        } catch BrokerError.transferNotFound, BrokerError.gone {
            throw APIError(.notFound, "not_found", "no file at this address")
        } catch BrokerError.quarantined {
            throw APIError(.forbidden, "quarantined", "this file is held in quarantine")
        }
        return try await self.files.respond(to: request, context: context, download: authorized, disposition: .inlineWhenHarmless)
    }
}
