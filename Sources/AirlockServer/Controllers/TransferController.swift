import AirlockCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Prometheus

/// The IM-server API: hand off, look up, mint tokens for and retract transfers.
struct TransferController {
    let broker: Broker
    let metrics: AirlockMetrics
    let logger: Logger

    var endpoints: RouteCollection<AirlockRequestContext> {
        let routes = RouteCollection(context: AirlockRequestContext.self)
        routes.add(middleware: RefusalMiddleware(kind: "transfers", metrics: self.metrics, logger: self.logger))
        routes.add(
            middleware: ServerAuthenticationMiddleware(
                live: self.broker.live,
                mutualTLS: self.broker.configuration.http.tls.clientCAFile != nil
            )
        )
        routes.post(use: self.create)
        routes.get(":id", use: self.show)
        routes.delete(":id", use: self.delete)
        routes.post(":id/tokens", use: self.issueToken)
        routes.methodNotAllowed("", allowing: [.post])
        routes.methodNotAllowed(":id", allowing: [.get, .head, .delete])
        routes.methodNotAllowed(":id/tokens", allowing: [.post])
        return routes
    }

    /// `POST /v1/transfers`: streams the body to staging while hashing, inspects, stores, answers with the verdict.
    @Sendable func create(_ request: Request, context: AirlockRequestContext) async throws -> Response {
        let query = request.uri.queryParameters
        let handOff = HandOff(
            server: context.server ?? "unknown",
            sender: query["sender"].map(String.init) ?? "",
            recipients: query.getAll("recipient").map { String($0) },
            filename: query["filename"].map(String.init) ?? "",
            declaredType: request.headers[.contentType]
        )
        _ = try Broker.validate(handOff)
        var length: Int?
        let lengths = request.headers[values: .contentLength]
        if let first = lengths.first {
            guard lengths.count == 1, let announced = Int(first), announced >= 0 else {
                throw BrokerError.invalidRequest("Content-Length is invalid")
            }
            try self.broker.checkAnnouncedLength(announced)
            length = announced
        }
        try await self.broker.checkQuota(handOff, length: length)
        let result = try await Self.handOff(handOff, request: request, length: length, context: context, broker: self.broker, metrics: self.metrics)
        let document = TransferDocument(result.transfer, recipients: result.recipients, downloads: result.downloads)
        return Self.json(bytes: try document.json(), status: .created)
    }

    /// Receives a request's body (cut off with 408 when it arrives too slowly, ``UploadPace``) and hands it off:
    /// the native API and XEP-0363 share this and everything in core behind it.
    static func handOff(
        _ handOff: HandOff,
        request: Request,
        length: Int?,
        context: AirlockRequestContext,
        broker: Broker,
        metrics: AirlockMetrics
    ) async throws -> HandOffResult {
        var pace = UploadPace(broker.configuration.http)
        let body = try await broker.receiveBody(request.body, length: length, declaredType: handOff.declaredType) { count in
            try pace.received(count, on: context.channel)
        }
        let started = ContinuousClock.now
        let result = try await broker.handOff(handOff, body: body)
        metrics.scanDuration.record(ContinuousClock.now - started)
        metrics.uploads.increment()
        metrics.uploadBytes.increment(by: result.transfer.size)
        metrics.verdicts[result.transfer.verdict]?.increment()
        metrics.countContentClass(result.transfer.contentClass)
        return result
    }

    /// `GET /v1/transfers/{id}`.
    @Sendable func show(_ request: Request, context: AirlockRequestContext) async throws -> Response {
        let id = try context.parameters.require("id")
        let (record, recipients) = try await self.broker.transfer(id: id, server: context.server)
        return try Self.json(TransferDocument(record, recipients: recipients))
    }

    struct TokenRequest: Decodable {
        var recipient: String
        var ttlSeconds: Int?
    }

    struct TokenResponse: Encodable {
        var url: String
        var expiresAt: Date
    }

    /// `POST /v1/transfers/{id}/tokens`.
    @Sendable func issueToken(_ request: Request, context: AirlockRequestContext) async throws -> Response {
        let id = try context.parameters.require("id")
        let body: TokenRequest
        var collected = ByteBuffer()
        var pace = UploadPace(self.broker.configuration.http)
        for try await buffer in request.body {
            try pace.received(buffer.readableBytes, on: context.channel)
            guard collected.readableBytes + buffer.readableBytes <= 64 * 1024 else {
                throw BrokerError.invalidRequest("the body must be JSON {\"recipient\": \"…\", \"ttlSeconds\": N} of at most 64 KiB")
            }
            collected.writeImmutableBuffer(buffer)
        }
        do {
            body = try JSONDecoder().decode(TokenRequest.self, from: Data(collected.readableBytesView))
        } catch {
            throw BrokerError.invalidRequest("the body must be JSON {\"recipient\": \"…\", \"ttlSeconds\": N}")
        }
        if let ttl = body.ttlSeconds, !(1...(7 * 86400)).contains(ttl) {
            throw BrokerError.invalidRequest("ttlSeconds must be between 1 and 604800")
        }
        let grant = try await self.broker.issueDownload(
            transferId: id,
            recipient: body.recipient,
            ttlSeconds: body.ttlSeconds,
            server: context.server
        )
        return try Self.json(TokenResponse(url: grant.url, expiresAt: grant.expiresAt), status: .created)
    }

    /// `DELETE /v1/transfers/{id}`.
    @Sendable func delete(_ request: Request, context: AirlockRequestContext) async throws -> HTTPResponse.Status {
        let id = try context.parameters.require("id")
        let server = context.server ?? "unknown"
        try await self.broker.retract(transferId: id, server: server)
        return .noContent
    }

    static func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
        Self.json(bytes: try TransferDocument.encoder.encode(value), status: status)
    }

    static func json(bytes: some Sequence<UInt8>, status: HTTPResponse.Status) -> Response {
        Response(
            status: status,
            headers: [.contentType: "application/json; charset=utf-8", .cacheControl: "no-store"],
            body: .init(byteBuffer: ByteBuffer(bytes: bytes))
        )
    }
}

extension RouterMethods {
    /// Answers 405 with an `Allow` header for the methods a path does not support.
    func methodNotAllowed(_ path: RouterPath, allowing allowed: [HTTPRequest.Method]) {
        let all: [HTTPRequest.Method] = [.get, .head, .post, .put, .delete, .patch, .options]
        let allowHeader = allowed.map(\.rawValue).joined(separator: ", ")
        for method in all where !allowed.contains(method) && !(method == .head && allowed.contains(.get)) {
            self.on(path, method: method) { _, _ -> Response in
                var error = APIError(.methodNotAllowed, "method_not_allowed", "use \(allowHeader) on this path")
                error.headers[.allow] = allowHeader
                throw error
            }
        }
    }
}
