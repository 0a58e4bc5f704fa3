import AirlockCore
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore
import Prometheus

/// Streams a stored transfer to a client with safe headers and `Range` support, and records the download.
struct FileResponder: Sendable {
    let broker: Broker
    let metrics: AirlockMetrics
    let fileIO: FileIO

    /// How the browser should treat the file.
    enum Disposition {
        /// Always a download, with the detected type.
        case attachment
        /// Shown in place when the detected type is passive (``FileResponder/isPassive(_:)``); a download otherwise.
        case inlineWhenHarmless
    }

    /// The short allow-list of types a browser may show in place from the broker's origin: raster images, audio,
    /// video and `text/plain`. SVG (which runs script), HTML, XHTML, XML, PDF and everything else are downloads.
    static func isPassive(_ mimeType: String) -> Bool {
        let type = mimeType.lowercased()
        if type == "text/plain" { return true }
        guard let slash = type.firstIndex(of: "/") else { return false }
        let family = type[..<slash]
        let subtype = type[type.index(after: slash)...]
        // Structured-syntax suffixes (+xml: SVG and friends; +json) carry documents, not media.
        guard !subtype.contains("+"), !subtype.isEmpty else { return false }
        return family == "image" || family == "audio" || family == "video"
    }

    func respond(
        to request: Request,
        context: AirlockRequestContext,
        download: Broker.AuthorizedDownload,
        disposition: Disposition
    ) async throws -> Response {
        let (transfer, path, recipient) = (download.transfer, download.path, download.recipient)
        let isHead = request.method == .head
        guard FileManager.default.fileExists(atPath: path) else {
            // Deleted or purged between the state check and now.
            throw APIError(.gone, "gone", "this file was removed")
        }
        let size = Int(transfer.size)
        let detected = transfer.detectedType ?? "application/octet-stream"
        let inline = disposition == .inlineWhenHarmless && Self.isPassive(detected)
        let filename = Filename.percentEncoded(transfer.filename)
        var headers: HTTPFields = [
            .contentType: inline || disposition == .attachment ? detected : "application/octet-stream",
            .contentDisposition: "\(inline ? "inline" : "attachment"); filename*=UTF-8''\(filename)",
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
                recipient: recipient,
                at: self.broker.now(),
                remoteAddress: context.remoteAddress?.ipAddress,
                bytes: isHead ? 0 : Int64(length),
                status: Int(status.code)
            )
        )
        guard !isHead, let range else {
            return Response(status: status, headers: headers, body: .init())
        }
        self.metrics.downloads.increment()
        self.metrics.downloadBytes.increment(by: Int64(length))
        let body = try await self.fileIO.loadFile(path: path, range: range, context: context)
        return Response(status: status, headers: headers, body: body)
    }
}

extension HTTPField.Name {
    static let xContentTypeOptions = Self("X-Content-Type-Options")!
    static let contentSecurityPolicy = Self("Content-Security-Policy")!
}
