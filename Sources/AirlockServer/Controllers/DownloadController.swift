import AirlockCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Prometheus

/// `GET`/`HEAD /v1/files/{token}`: streams a clean file to a recipient with safe headers and `Range` support.
struct DownloadController {
    let broker: Broker
    let metrics: AirlockMetrics
    let logger: Logger
    let files: FileResponder

    var endpoints: RouteCollection<AirlockRequestContext> {
        let routes = RouteCollection(context: AirlockRequestContext.self)
        routes.add(middleware: RefusalMiddleware(kind: "files", metrics: self.metrics, logger: self.logger))
        routes.get(":token", use: self.download)
        routes.head(":token", use: self.download)
        routes.methodNotAllowed(":token", allowing: [.get, .head])
        return routes
    }

    @Sendable func download(_ request: Request, context: AirlockRequestContext) async throws -> Response {
        let token = try context.parameters.require("token")
        let isHead = request.method == .head
        let authorized: Broker.AuthorizedDownload
        do {
            authorized = try await self.broker.authorizeDownload(.token(token, consume: !isHead))
        } catch let error as BrokerError {
            switch error {
            case .invalidToken, .tokenExpired, .notARecipient:
                self.metrics.tokenRejections.increment()
            default:
                break
            }
            throw error
        }
        return try await self.files.respond(to: request, context: context, download: authorized, disposition: .attachment)
    }
}

/// A single `Range: bytes=…` request.
enum ByteRange: Equatable {
    case satisfiable(ClosedRange<Int>)
    case unsatisfiable
    /// Not a single byte range we serve partially (multiple ranges, other units, malformed): send the whole file.
    case ignored

    static func parse(_ header: String, size: Int) -> ByteRange {
        let value = header.trimmingCharacters(in: .whitespaces)
        guard value.lowercased().hasPrefix("bytes="), !value.contains(",") else { return .ignored }
        let spec = value.dropFirst(6).trimmingCharacters(in: .whitespaces)
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return .ignored }
        let first = parts[0].trimmingCharacters(in: .whitespaces)
        let last = parts[1].trimmingCharacters(in: .whitespaces)
        if first.isEmpty {
            // Suffix range: the last N bytes.
            guard let count = Int(last), count >= 0 else { return .ignored }
            guard count > 0, size > 0 else { return .unsatisfiable }
            return .satisfiable(max(0, size - count)...(size - 1))
        }
        guard let start = Int(first), start >= 0 else { return .ignored }
        guard start < size else { return .unsatisfiable }
        if last.isEmpty {
            return .satisfiable(start...(size - 1))
        }
        guard let end = Int(last), end >= start else { return .ignored }
        return .satisfiable(start...min(end, size - 1))
    }
}
