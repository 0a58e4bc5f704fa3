import AirlockCore
import Foundation
import Hummingbird
import Logging

/// Counts and logs every refusal on an upload or download path: each 4xx (and 503, 507) answer is counted in
/// `airlock_refusals_total{path, reason, status}` and logged once at `notice` with the client's address and the
/// reason, so forged, replayed or oversized attempts are visible. Nothing secret is logged: no header, no query
/// (signatures and tokens live there), no path (download tokens do).
struct RefusalMiddleware: RouterMiddleware {
    typealias Context = AirlockRequestContext

    /// The kind of path, the `path` label: `transfers` (native API), `xep0363`, `files` (token downloads).
    let kind: String
    let metrics: AirlockMetrics
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            guard let refusal = APIError.converting(error), refusal.status.code >= 400,
                refusal.status.code < 500 || refusal.status == .serviceUnavailable || refusal.status == .insufficientStorage
            else {
                throw error
            }
            if case BrokerError.quotaExceeded(let exceeded) = error {
                self.metrics.countQuotaRefusal(quota: exceeded.quota)
            }
            let isUpload = request.method == .put || (request.method == .post && self.kind == "transfers" && context.parameters.get("id") == nil)
            self.metrics.countRefusal(path: self.kind, reason: refusal.code, status: Int(refusal.status.code), upload: isUpload)
            self.logger.notice(
                "request refused",
                metadata: [
                    "path": "\(self.kind)", "method": "\(request.method.rawValue)", "status": "\(refusal.status.code)",
                    "reason": "\(refusal.code)", "client": "\(context.remoteAddress?.ipAddress ?? "unknown")",
                    "server": "\(context.server ?? "-")",
                ]
            )
            throw refusal
        }
    }
}
