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
        // Two IM servers' certificates from the same CA, each naming its server in subjectAltName.
        try directory.write("srva.ext", Data("extendedKeyUsage=clientAuth\nsubjectAltName=DNS:xmpp-a.example.org\n".utf8))
        try directory.write("srvb.ext", Data("extendedKeyUsage=clientAuth\nsubjectAltName=DNS:xmpp-b.example.org\n".utf8))
        for name in ["server", "client", "srva", "srvb"] {
            try openssl(["req"] + key + ["-keyout", "\(name).key", "-out", "\(name).csr", "-subj", "/CN=\(name)"])
            try openssl([
                "x509", "-req", "-in", "\(name).csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "\(name).pem",
                "-days", "2", "-extfile", "\(name).ext",
            ])
        }
        try openssl(["req", "-x509"] + key + ["-keyout", "rogue.key", "-out", "rogue.pem", "-days", "2", "-subj", "/CN=rogue"])
    }

    /// A server on HTTPS that requires client certificates from `certificates`' CA for the IM-server API; prosody's
    /// certificate carries the name `prosody`, ejabberd's `xmpp-b.example.org`.
    func mutualTLSHarness(_ certificates: TemporaryDirectory, prosody: String) throws -> ServerHarness {
        try ServerHarness {
            $0.http.tls = .init(
                certificateFile: certificates.file("server.pem"),
                privateKeyFile: certificates.file("server.key"),
                clientCAFile: certificates.file("ca.pem")
            )
            $0.servers["prosody"]?.certificateNames = [prosody]
            $0.servers["ejabberd"]?.certificateNames = ["xmpp-b.example.org"]
        }
    }

    @Test func httpsWithClientCertificatesRequiredForTheIMServerAPIOnly() async throws {
        let certificates = try TemporaryDirectory()
        try self.makeCertificates(in: certificates)
        // The client certificate has no subjectAltName: its CN names the server.
        let harness = try self.mutualTLSHarness(certificates, prosody: "client")
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

    /// Finding 3: any certificate signed by the client CA plus any server's API key was accepted, so srvB's
    /// certificate with srvA's key handed off as srvA. Now the certificate names the server.
    @Test func theClientCertificateNamesTheServer() async throws {
        let certificates = try TemporaryDirectory()
        try self.makeCertificates(in: certificates)
        let harness = try self.mutualTLSHarness(certificates, prosody: "xmpp-a.example.org")
        try await harness.run(scheme: TestHTTPScheme.https) { client in
            let base = "https://127.0.0.1:\(try #require(client.port))"
            let handOff = "\(base)/v1/transfers?sender=a@example.org&recipient=b@example.org&filename=n.txt"
            func curl(_ certificate: String, key: String?) async throws -> (status: String, body: String) {
                let output = try TemporaryDirectory()
                var arguments = [
                    "-s", "-o", output.file("body"), "-w", "%{http_code}", "--max-time", "20", "--cacert", certificates.file("ca.pem"),
                    "--cert", certificates.file("\(certificate).pem"), "--key", certificates.file("\(certificate).key"),
                    "--data-binary", "hello",
                ]
                if let key { arguments += ["-H", "Authorization: Bearer \(key)"] }
                let result = try await ProcessRunner.run("/usr/bin/curl", arguments + [handOff])
                let body = (try? String(contentsOfFile: output.file("body"), encoding: .utf8)) ?? ""
                return (result.standardOutput, body)
            }
            // The attack: srvB's certificate with srvA's key.
            let crossed = try await curl("srvb", key: ServerHarness.prosodyKey)
            #expect(crossed.status == "403")
            #expect(crossed.body.contains("api_key_mismatch"))
            // A certificate of the CA that names no configured server.
            let unbound = try await curl("client", key: ServerHarness.prosodyKey)
            #expect(unbound.status == "403")
            #expect(unbound.body.contains("certificate_not_bound"))
            // Each certificate hands off as its own server, with its own key or with none.
            let asA = try await curl("srva", key: ServerHarness.prosodyKey)
            #expect(asA.status == "201")
            #expect(asA.body.contains(#""server":"prosody""#))
            let asB = try await curl("srvb", key: nil)
            #expect(asB.status == "201")
            #expect(asB.body.contains(#""server":"ejabberd""#))
        }
    }
}
