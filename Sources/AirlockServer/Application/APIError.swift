import AirlockCore
import Foundation
public import Hummingbird

/// An error answered as `{"error": "<code>", "message": "<human text>"}` with its status.
public struct APIError: HTTPResponseError, Sendable {
    /// The HTTP status.
    public let status: HTTPResponse.Status
    /// A stable, machine-readable code.
    public let code: String
    /// What happened and what to do.
    public let message: String
    /// Extra JSON fields (the verdict of a quarantined transfer).
    public var extra: [String: String] = [:]
    /// Extra JSON fields that are numbers (the limit of an exceeded quota).
    public var numbers: [String: Int64] = [:]
    /// Extra headers (`Content-Range` on 416).
    public var headers: HTTPFields = [:]

    /// Creates an error.
    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var body = self.extra.mapValues(Field.string).merging(self.numbers.mapValues(Field.number)) { text, _ in text }
        body["error"] = .string(self.code)
        body["message"] = .string(self.message)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(body)
        var headers = self.headers
        headers[.contentType] = "application/json; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: self.status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    /// A JSON field's value: a string or a number.
    private enum Field: Encodable {
        case string(String)
        case number(Int64)

        func encode(to encoder: any Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .string(let text): try container.encode(text)
            case .number(let number): try container.encode(number)
            }
        }
    }
}

extension APIError {
    /// The HTTP answer for a broker error.
    init(_ error: BrokerError) {
        switch error {
        case .invalidRequest(let message):
            self.init(.badRequest, "invalid_request", message)
        case .transferNotFound:
            self.init(.notFound, "not_found", error.description)
        case .notDownloadable:
            self.init(.conflict, "not_downloadable", error.description)
        case .notARecipient:
            self.init(.forbidden, "not_a_recipient", error.description)
        case .invalidToken:
            self.init(.forbidden, "invalid_token", error.description)
        case .tokenExpired:
            self.init(.gone, "token_expired", error.description)
        case .gone:
            self.init(.gone, "gone", error.description)
        case .quarantined(_, let verdict):
            self.init(.unavailableForLegalReasons, "quarantined", error.description)
            self.extra["verdict"] = verdict.kind.rawValue
            self.extra["signature"] = verdict.signature
            self.extra["reason"] = verdict.reason
        case .tooLarge:
            self.init(.contentTooLarge, "too_large", error.description)
        case .slotTaken:
            self.init(.conflict, "slot_taken", error.description)
        case .unavailable:
            self.init(.serviceUnavailable, "unavailable", error.description)
        case .heldInQuarantine:
            self.init(.conflict, "held_in_quarantine", error.description)
        case .quotaExceeded(let exceeded):
            // 429 for a daily quota, which passes with the day (Retry-After says when); 507 for what is stored.
            self.init(exceeded.isDaily ? .tooManyRequests : .insufficientStorage, "quota_exceeded", error.description)
            self.extra["quota"] = exceeded.quota
            self.numbers["limit"] = exceeded.limit
            if let retryAfter = exceeded.retryAfterSeconds {
                self.headers[.retryAfter] = String(retryAfter)
            }
        }
    }
}

/// Maps broker errors and Hummingbird's own errors (unknown routes, bad bodies) to ``APIError`` responses, so
/// every error has the same JSON shape.
struct BrokerErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            throw APIError.converting(error) ?? error
        }
    }
}

extension APIError {
    /// The answer for a broker error, one of Hummingbird's own errors or an ``APIError``; nil for anything else
    /// (which becomes a 500).
    static func converting(_ error: any Error) -> APIError? {
        switch error {
        case let error as APIError:
            return error
        case let error as BrokerError:
            return APIError(error)
        case let error as HTTPError:
            let code = error.status.reasonPhrase.lowercased().replacingOccurrences(of: " ", with: "_")
            var converted = APIError(error.status, code, error.body ?? error.status.reasonPhrase)
            converted.headers = error.headers
            return converted
        default:
            return nil
        }
    }
}

extension HTTPResponse.Status {
    /// 507: a quota on stored bytes is exhausted (HTTPTypes names no constant for it).
    static var insufficientStorage: Self { .init(code: 507, reasonPhrase: "Insufficient Storage") }
}
