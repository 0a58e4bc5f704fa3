import AirlockCore
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
            struct Readiness: Encodable {
                var status: String
                var signatures: Int
                var signatureVersion: String
                var databaseVersion: String
            }
            do {
                let schema = try await self.broker.database.schemaVersion()
                let signatures = self.broker.inspector.signatures
                return try TransferController.json(
                    Readiness(status: "ready", signatures: signatures.signatureCount, signatureVersion: signatures.version, databaseVersion: schema)
                )
            } catch {
                throw APIError(.serviceUnavailable, "not_ready", "the ledger is not readable: \(error)")
            }
        }
        for path in ["healthz", "readyz", "metrics"] {
            router.methodNotAllowed(RouterPath(path), allowing: [.get, .head])
        }
        router.get("metrics") { _, _ in
            Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: self.metrics.registry.emitToBuffer()))
            )
        }
    }
}
