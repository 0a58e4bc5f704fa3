import AirlockCore
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import NIOCore
import Prometheus

/// `/healthz`, `/readyz` and `/metrics`.
struct OperationsController {
    let broker: Broker
    let metrics: AirlockMetrics

    func addRoutes(to router: Router<AirlockRequestContext>) {
        router.get("healthz") { _, _ in
            try TransferController.json(["status": "ok"])
        }
        router.get("readyz") { _, _ in
            do {
                return try TransferController.json(try await self.broker.readiness())
            } catch {
                throw APIError(.serviceUnavailable, "not_ready", "the ledger is not readable: \(error)")
            }
        }
        for path in ["healthz", "readyz", "metrics"] {
            router.methodNotAllowed(RouterPath(path), allowing: [.get, .head])
        }
        // `metrics.bearerToken` is reloaded without a restart.
        let bearerDigest = Derived(self.broker.live) { $0.metrics.bearerToken.map { Data(SHA256.hash(data: Data($0.utf8))) } }
        router.get("metrics") { request, _ in
            if let bearer = bearerDigest.current {
                // Compared as digests in constant time, as the API keys are.
                let presented = request.headers[.authorization].flatMap { header -> String? in
                    header.lowercased().hasPrefix("bearer ") ? header.dropFirst(7).trimmingCharacters(in: .whitespaces) : nil
                }
                guard let presented, ConstantTime.equal(Data(SHA256.hash(data: Data(presented.utf8))), bearer) else {
                    var error = APIError(.unauthorized, "unauthorized", "send Authorization: Bearer <metrics.bearerToken>")
                    error.headers[.wwwAuthenticate] = "Bearer"
                    throw error
                }
            }
            return Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: self.metrics.registry.emitToBuffer()))
            )
        }
    }
}
