public import AirlockCore
public import Foundation
public import Hummingbird
import HummingbirdCore
import HummingbirdTLS
public import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

/// Builds the broker's HTTP application on a configuration: loads signatures, opens the ledger, prepares the store.
///
/// - Parameter now: the clock, injectable for tests.
public func buildApplication(
    configuration: AirlockConfiguration,
    logger: Logger,
    now: @escaping @Sendable () -> Date = { Date() }
) async throws -> some ApplicationProtocol {
    let broker = try await Broker.start(configuration: configuration, logger: logger, now: now)
    let metrics = AirlockMetrics()
    broker.inspector.observeScanner { metrics.countScannerEvent($0) }
    let router = Router(context: AirlockRequestContext.self)
    // Outermost, so that it sees every answer on the browser-facing paths, errors included (already mapped to APIError).
    router.add(middleware: CORSMiddleware(configuration: configuration, metrics: metrics))
    router.add(middleware: BrokerErrorMiddleware())
    OperationsController(broker: broker, metrics: metrics).addRoutes(to: router)
    router.addRoutes(TransferController(broker: broker, metrics: metrics, logger: logger).endpoints, atPath: "/v1/transfers")
    let files = FileResponder(broker: broker, metrics: metrics, fileIO: FileIO(threadPool: broker.threadPool))
    router.addRoutes(DownloadController(broker: broker, metrics: metrics, logger: logger, files: files).endpoints, atPath: "/v1/files")
    if configuration.xep0363.enabled {
        let upload = await XEP0363Controller(broker: broker, metrics: metrics, logger: logger, files: files)
        router.addRoutes(upload.endpoints, atPath: RouterPath(String(configuration.xep0363.pathPrefix.dropLast())))
    }

    // Slow clients: a connection that sends no complete request header and no body bytes for
    // `http.idleTimeoutSeconds` is closed, and at most `http.maxConnections` are served at once.
    let maxBodyBytes = configuration.limits.maxUploadBytes
    let http1 = HTTP1Channel.Configuration(
        additionalChannelHandlers: [ExpectContinueHandler(maxBodyBytes: maxBodyBytes)],
        idleTimeout: .seconds(Int64(configuration.http.idleTimeoutSeconds))
    )
    let server: HTTPServerBuilder
    if let tls = try TLSSettings(configuration.http.tls) {
        server = try .tls(.http1(configuration: http1), tlsConfiguration: tls.configuration)
    } else {
        server = .http1(configuration: http1)
    }
    var app = Application(
        router: router,
        server: server,
        configuration: .init(
            address: .hostname(configuration.http.host, port: configuration.http.port),
            serverName: "Airlock",
            availableConnectionsDelegate: MaximumAvailableConnections(configuration.http.maxConnections, logger: logger)
        ),
        onServerRunning: { channel in
            logger.notice("Airlock is serving", metadata: ["address": "\(channel.localAddress?.description ?? "?")"])
        },
        logger: logger
    )
    app.addServices(BrokerService(broker: broker))
    return app
}

/// Shuts the broker's thread pools down when the application stops.
struct BrokerService: Service {
    let broker: Broker

    func run() async throws {
        // Wait for the shutdown signal without a busy task: the service group cancels or signals us.
        try? await gracefulShutdown()
        try await self.broker.shutdown()
    }
}

/// HTTPS settings from `http.tls`.
struct TLSSettings {
    let configuration: TLSConfiguration

    init?(_ tls: AirlockConfiguration.TLS) throws {
        guard let certificateFile = tls.certificateFile, let privateKeyFile = tls.privateKeyFile else { return nil }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: privateKeyFile, format: .pem))
        )
        // TLS 1.0 and 1.1 are deprecated (RFC 8996); every IM server and client in use speaks 1.2.
        configuration.minimumTLSVersion = .tlsv12
        if let clientCAFile = tls.clientCAFile {
            // Verify a client certificate when one is presented; the IM-server API then requires one, while
            // recipients' downloads and the operations endpoints work without.
            configuration.trustRoots = .file(clientCAFile)
            configuration.certificateVerification = .optionalVerification
        }
        self.configuration = configuration
    }
}
