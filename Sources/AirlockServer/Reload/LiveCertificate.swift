import AirlockCore
import Logging
import NIOCore
import NIOSSL
import Synchronization

/// The server's TLS certificate chain and key, read again from their files at every configuration reload: a new
/// connection's handshake gets the ones read last (certbot renewals need no restart), connections already open keep
/// theirs. A file that cannot be read leaves the previous certificate serving.
final class LiveCertificate: Sendable {
    private struct Material: Sendable {
        var chain: [NIOSSLCertificateSource]
        var key: NIOSSLPrivateKeySource
    }

    private let material: Mutex<Material>

    /// Reads the certificate and key `tls` names.
    init(_ tls: AirlockConfiguration.TLS) throws {
        self.material = Mutex(try Self.read(tls))
    }

    private static func read(_ tls: AirlockConfiguration.TLS) throws -> Material {
        guard let certificateFile = tls.certificateFile, let privateKeyFile = tls.privateKeyFile else {
            throw NIOSSLError.failedToLoadCertificate
        }
        let chain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { NIOSSLCertificateSource.certificate($0) }
        let key = NIOSSLPrivateKeySource.privateKey(try NIOSSLPrivateKey(file: privateKeyFile, format: .pem))
        return Material(chain: chain, key: key)
    }

    /// Reads the files again; on failure the previous certificate keeps serving. Blocking (file reads).
    ///
    /// - Returns: the error when the files could not be read.
    func reread(_ tls: AirlockConfiguration.TLS) -> (any Error)? {
        do {
            let material = try Self.read(tls)
            self.material.withLock { $0 = material }
            return nil
        } catch {
            return error
        }
    }

    /// For `TLSConfiguration.sslContextCallback`: each handshake takes the material in force.
    var callback: NIOSSLContextCallback {
        { _, promise in
            let material = self.material.withLock { $0 }
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = material.chain
            override.privateKey = material.key
            promise.succeed(override)
        }
    }
}
