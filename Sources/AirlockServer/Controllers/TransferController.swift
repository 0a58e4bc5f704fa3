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
                servers: self.broker.configuration.servers,
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
        let handOff = Broker.HandOff(
            server: context.server ?? "unknown",
            sender: query["sender"].map(String.init) ?? "",
            recipients: query.getAll("recipient").map { String($0) },
            filename: query["filename"].map(String.init) ?? "",
            declaredType: request.headers[.contentType]
        )
        let limit = self.broker.configuration.limits.maxUploadBytes
        var announcedLength: Int?
        _ = try Broker.validate(handOff)
        let lengths = request.headers[values: .contentLength]
        if let first = lengths.first {
            guard lengths.count == 1, let length = Int(first), length >= 0 else {
                throw BrokerError.invalidRequest("Content-Length is invalid")
            }
            guard length <= limit else { throw BrokerError.tooLarge(limit: limit) }
            announcedLength = length
        }

        let body = try await Self.stage(
            request.body,
            length: announcedLength,
            declaredType: handOff.declaredType,
            channel: context.channel,
            broker: self.broker,
            metrics: self.metrics
        )

        let (record, recipients, grants) = try await Self.receive(handOff, body: body, broker: self.broker, metrics: self.metrics)

        return Self.json(bytes: try TransferDocument(record, recipients: recipients, downloads: grants).json(), status: .created)
    }

    /// `GET /v1/transfers/{id}`.
    @Sendable func show(_ request: Request, context: AirlockRequestContext) async throws -> Response {
        let id = try context.parameters.require("id")
        guard let (record, recipients) = try await self.broker.ledger.transfer(id: id, server: context.server) else {
            throw BrokerError.transferNotFound(id)
        }
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
        let grant = try await self.broker.ledger.issueDownload(
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
        try await self.broker.ledger.delete(transferId: id, actor: "server:\(server)", server: server, reason: "retracted by the sender")
        return .noContent
    }

    /// An upload's body once received.
    enum ReceivedBody: Sendable {
        /// Whole in memory: an announced length of at most ``Broker/inMemoryLimit``.
        case inMemory(ByteBuffer)
        /// In a staging file, with the inspection that started while it was received, if any.
        case staged(StagingFile, InspectionInProgress?)
    }

    /// Receives a request body, cutting it off with 413 past `limits.maxUploadBytes` and with 408 when it arrives
    /// too slowly (``UploadPace``).
    ///
    /// A body whose announced `length` is at most ``Broker/inMemoryLimit`` is kept in memory. Any other is
    /// streamed into a new staging file, removed on any failure; when its `length` is announced, the inspection
    /// starts at once and reads the file as it grows.
    static func stage(
        _ body: RequestBody,
        length: Int?,
        declaredType: String?,
        channel: any Channel,
        broker: Broker,
        metrics: AirlockMetrics
    ) async throws -> ReceivedBody {
        let limit = broker.configuration.limits.maxUploadBytes
        if let length, length <= Broker.inMemoryLimit {
            var collected = ByteBuffer()
            var pace = UploadPace(broker.configuration.http)
            for try await buffer in body {
                try pace.received(buffer.readableBytes, on: channel)
                guard collected.readableBytes + buffer.readableBytes <= length else {
                    throw BrokerError.invalidRequest("the body is longer than its Content-Length of \(length) bytes")
                }
                collected.writeImmutableBuffer(buffer)
            }
            guard collected.readableBytes == length else {
                throw BrokerError.invalidRequest(
                    "the body ended after \(collected.readableBytes) of the \(length) bytes its Content-Length announced"
                )
            }
            return .inMemory(collected)
        }
        let staging = try StagingFile(path: broker.store.newStagingPath(), expectedSize: length.map(Int64.init), threadPool: broker.threadPool)
        let inProgress = broker.inspector.beginInspection(of: staging, declaredType: declaredType)
        var pace = UploadPace(broker.configuration.http)
        do {
            for try await buffer in body {
                try pace.received(buffer.readableBytes, on: channel)
                guard staging.size + Int64(buffer.readableBytes) <= Int64(limit) else {
                    throw BrokerError.tooLarge(limit: limit)
                }
                try await staging.append(buffer)
            }
        } catch {
            staging.discard()
            await inProgress?.cancel()
            throw error
        }
        return .staged(staging, inProgress)
    }

    /// Runs the inspection pipeline on a received upload and records its metrics; a staging file is consumed.
    static func receive(
        _ handOff: Broker.HandOff,
        body: ReceivedBody,
        slot: String? = nil,
        broker: Broker,
        metrics: AirlockMetrics
    ) async throws -> (TransferRecord, [String], [Ledger.DownloadGrant]) {
        let started = ContinuousClock.now
        let received: (TransferRecord, [String], [Ledger.DownloadGrant])
        switch body {
        case .inMemory(let contents):
            received = try await broker.receive(handOff, contents: contents, slot: slot)
        case .staged(let staging, let inProgress):
            do {
                received = try await broker.receive(handOff, staging: staging, slot: slot, inProgress: inProgress)
            } catch {
                staging.discard()
                await inProgress?.cancel()
                throw error
            }
        }
        metrics.scanDuration.record(ContinuousClock.now - started)
        metrics.uploads.increment()
        metrics.uploadBytes.increment(by: received.0.size)
        metrics.verdicts[received.0.verdict]?.increment()
        return received
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
