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
/// - Parameters:
///   - configurationSource: reads the configuration again for a reload (SIGHUP, `airlock reload`); nil reloads
///     signatures only.
///   - now: the clock, injectable for tests.
public func buildApplication(
    configuration: AirlockConfiguration,
    logger: Logger,
    configurationSource: (@Sendable () throws -> AirlockConfiguration)? = nil,
    now: @escaping @Sendable () -> Date = { Date() }
) async throws -> some ApplicationProtocol {
    let broker = try await Broker.start(configuration: configuration, logger: logger, now: now)
    let metrics = AirlockMetrics()
    broker.inspector.observeScanner { metrics.countScannerEvent($0) }
    broker.observeReloads { metrics.countReload($0) }
    let retroscanner = Retroscanner(broker: broker)
    retroscanner.observe { metrics.countRetroscan($0) }
    broker.observeReloads { report in
        if case .reloaded = report.signatures.outcome { retroscanner.requestPass() }
    }
    // Once the old signatures' last scans are recorded, a pass catches what they judged after the swap.
    broker.inspector.observeRetirements { retroscanner.requestPass() }
    let router = Router(context: AirlockRequestContext.self)
    // Outermost, so that it sees every answer on the browser-facing paths, errors included (already mapped to APIError).
    router.add(middleware: CORSMiddleware(configuration: configuration, metrics: metrics))
    router.add(middleware: BrokerErrorMiddleware())
    OperationsController(broker: broker, metrics: metrics).addRoutes(to: router)
    router.addRoutes(TransferController(broker: broker, metrics: metrics, logger: logger).endpoints, atPath: "/v1/transfers")
    let files = FileResponder(broker: broker, metrics: metrics, fileIO: FileIO(threadPool: broker.threadPool))
    router.addRoutes(DownloadController(broker: broker, metrics: metrics, logger: logger, files: files).endpoints, atPath: "/v1/files")
    if configuration.xep0363.enabled {
        let upload = XEP0363Controller(broker: broker, metrics: metrics, logger: logger, files: files)
        router.addRoutes(upload.endpoints, atPath: RouterPath(String(configuration.xep0363.pathPrefix.dropLast())))
    }

    // Slow clients: a connection that sends no complete request header and no body bytes for
    // `http.idleTimeoutSeconds` is closed, and at most `http.maxConnections` are served at once.
    // Read per connection: `limits` is reloaded without a restart.
    let http1 = HTTP1Channel.Configuration(
        additionalChannelHandlers: [ExpectContinueHandler(maxBodyBytes: broker.configuration.limits.maxUploadBytes)],
        idleTimeout: .seconds(Int64(configuration.http.idleTimeoutSeconds))
    )
    let server: HTTPServerBuilder
    var certificate: LiveCertificate?
    if let tls = try TLSSettings(configuration.http.tls) {
        server = try .tls(.http1(configuration: http1), tlsConfiguration: tls.configuration)
        certificate = tls.certificate
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
    app.addServices(
        BrokerService(broker: broker),
        ReloadService(broker: broker, configurationSource: configurationSource, certificate: certificate, logger: logger),
        RetroscanService(retroscanner: retroscanner)
    )
    // Always running, idle without webhooks: a configuration reload may add some (`NotificationRouter.update`).
    app.addServices(WebhookDeliveryService(ledger: broker.ledger, settings: configuration.notifications, metrics: metrics.webhooks, logger: logger, now: now))
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

/// Runs the retro-scanner until the application stops.
struct RetroscanService: Service {
    let retroscanner: Retroscanner

    func run() async throws {
        await withGracefulShutdownHandler {
            await self.retroscanner.run()
        } onGracefulShutdown: {
            self.retroscanner.finish()
        }
    }
}

/// HTTPS settings from `http.tls`.
struct TLSSettings {
    let configuration: TLSConfiguration

    /// The certificate and key, read again at each configuration reload.
    let certificate: LiveCertificate

    init?(_ tls: AirlockConfiguration.TLS) throws {
        guard let certificateFile = tls.certificateFile, let privateKeyFile = tls.privateKeyFile else { return nil }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: privateKeyFile, format: .pem))
        )
        // Every handshake asks for the certificate in force, so a renewal needs no restart.
        self.certificate = try LiveCertificate(tls)
        configuration.sslContextCallback = self.certificate.callback
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
