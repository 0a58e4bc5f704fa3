import AirlockCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore
import Prometheus

/// `GET`/`HEAD /v1/files/{token}`: streams a clean file to a recipient with safe headers and `Range` support.
struct DownloadController {
    let broker: Broker
    let metrics: AirlockMetrics
    let fileIO: FileIO

    var endpoints: RouteCollection<AirlockRequestContext> {
        let routes = RouteCollection(context: AirlockRequestContext.self)
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
            authorized = try await self.broker.authorizeDownload(token: token, consume: !isHead)
        } catch let error as BrokerError {
            switch error {
            case .invalidToken, .tokenExpired, .notARecipient:
                self.metrics.tokenRejections.increment()
            default:
                break
            }
            throw error
        }
        let transfer = authorized.transfer
        let size = Int(transfer.size)

        var headers: HTTPFields = [
            .contentType: transfer.detectedType ?? "application/octet-stream",
            .contentDisposition: "attachment; filename*=UTF-8''\(Self.percentEncode(transfer.filename))",
            .xContentTypeOptions: "nosniff",
            .contentSecurityPolicy: "default-src 'none'; sandbox",
            .cacheControl: "private, no-store",
            .acceptRanges: "bytes",
        ]
        var status: HTTPResponse.Status = .ok
        var range = size > 0 ? 0...(size - 1) : nil
        if let rangeHeader = request.headers[.range] {
            switch ByteRange.parse(rangeHeader, size: size) {
            case .satisfiable(let requested):
                range = requested
                status = .partialContent
                headers[.contentRange] = "bytes \(requested.lowerBound)-\(requested.upperBound)/\(size)"
            case .unsatisfiable:
                var error = APIError(.rangeNotSatisfiable, "range_not_satisfiable", "the requested range is outside the file (\(size) bytes)")
                error.headers[.contentRange] = "bytes */\(size)"
                throw error
            case .ignored:
                break
            }
        }
        let length = range.map { $0.count } ?? 0
        headers[.contentLength] = String(length)

        await self.broker.recordDownload(
            DownloadRecord(
                transferId: transfer.id,
                recipient: authorized.recipient,
                at: self.broker.now(),
                remoteAddress: context.remoteAddress?.ipAddress,
                bytes: isHead ? 0 : Int64(length),
                status: Int(status.code)
            )
        )
        if isHead || range == nil {
            return Response(status: status, headers: headers, body: .init())
        }
        self.metrics.downloads.increment()
        self.metrics.downloadBytes.increment(by: Int64(length))
        let body = try await self.fileIO.loadFile(path: authorized.path, range: range!, context: context)
        return Response(status: status, headers: headers, body: body)
    }

    /// RFC 5987 encoding for `filename*`: everything but unreserved characters is percent-encoded.
    static func percentEncode(_ name: String) -> String {
        var allowed = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)..<Unicode.Scalar(128)))
        allowed.insert(charactersIn: "-._~")
        return name.addingPercentEncoding(withAllowedCharacters: allowed) ?? "download"
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

extension HTTPField.Name {
    static let xContentTypeOptions = Self("X-Content-Type-Options")!
    static let contentSecurityPolicy = Self("Content-Security-Policy")!
}
