import AirlockCore
import AirlockTestSupport
import Foundation
import HummingbirdTesting
import Testing

@Suite("HTTPS and mutual TLS")
struct TLSTests {
    /// A CA, a server certificate for 127.0.0.1, a client certificate from the CA and a rogue self-signed one.
    private func makeCertificates(in directory: TemporaryDirectory) throws {
        func openssl(_ arguments: [String]) throws {
            let result = try ProcessRunner.runBlocking("/usr/bin/openssl", arguments, in: directory.path)
            guard result.status == 0 else { throw ProcessRunner.Failure(command: "openssl", result: result) }
        }
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try openssl(["req", "-x509"] + key + ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Airlock Test CA"])
        try directory.write("server.ext", Data("subjectAltName=IP:127.0.0.1\n".utf8))
        try directory.write("client.ext", Data("extendedKeyUsage=clientAuth\n".utf8))
        for name in ["server", "client"] {
            try openssl(["req"] + key + ["-keyout", "\(name).key", "-out", "\(name).csr", "-subj", "/CN=\(name)"])
            try openssl([
                "x509", "-req", "-in", "\(name).csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "\(name).pem",
                "-days", "2", "-extfile", "\(name).ext",
            ])
        }
        try openssl(["req", "-x509"] + key + ["-keyout", "rogue.key", "-out", "rogue.pem", "-days", "2", "-subj", "/CN=rogue"])
    }

    @Test func httpsWithClientCertificatesRequiredForTheIMServerAPIOnly() async throws {
        let certificates = try TemporaryDirectory()
        try self.makeCertificates(in: certificates)
        let harness = try ServerHarness {
            $0.http.tls = .init(
                certificateFile: certificates.file("server.pem"),
                privateKeyFile: certificates.file("server.key"),
                clientCAFile: certificates.file("ca.pem")
            )
        }
        try await harness.run(scheme: TestHTTPScheme.https) { client in
            let base = "https://127.0.0.1:\(try #require(client.port))"
            let handOff = "\(base)/v1/transfers?sender=a@example.org&recipient=b@example.org&filename=n.txt"
            func curl(_ arguments: [String]) async throws -> ProcessRunner.Result {
                try await ProcessRunner.run(
                    "/usr/bin/curl",
                    ["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", "--cacert", certificates.file("ca.pem")] + arguments
                )
            }
            let auth = ["-H", "Authorization: Bearer \(ServerHarness.prosodyKey)", "--data-binary", "hello"]

            // Operations and downloads need no client certificate.
            #expect(try await curl(["\(base)/healthz"]).standardOutput == "200")
            // The IM-server API does.
            #expect(try await curl(auth + [handOff]).standardOutput == "403")
            let withCertificate = try await curl(
                ["--cert", certificates.file("client.pem"), "--key", certificates.file("client.key")] + auth + [handOff]
            )
            #expect(withCertificate.standardOutput == "201")
            // A certificate from another CA fails the handshake.
            let rogue = try await curl(["--cert", certificates.file("rogue.pem"), "--key", certificates.file("rogue.key")] + auth + [handOff])
            #expect(rogue.status != 0)
            #expect(rogue.standardOutput == "000")
        }
    }
}
