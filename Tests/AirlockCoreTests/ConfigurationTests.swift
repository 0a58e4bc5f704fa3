import AirlockTestSupport
import Foundation
import Testing

@testable import AirlockCore

@Suite("configuration")
struct ConfigurationTests {
    private func load(_ json: String, environment: [String: String] = [:]) throws -> AirlockConfiguration {
        let directory = try TemporaryDirectory()
        let path = try directory.write("airlock.json", Data(json.utf8))
        return try AirlockConfiguration.load(file: path, environment: environment)
    }

    /// The configuration error `json` causes, or nil when it loads; any other error fails the test.
    private func error(_ json: String, environment: [String: String] = [:]) -> ConfigurationError? {
        do {
            _ = try self.load(json, environment: environment)
            return nil
        } catch let error as ConfigurationError {
            return error
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    @Test func theShippedFileEqualsTheBuiltInDefaults() throws {
        let shipped = try AirlockConfiguration.load(
            file: Fixtures.packageRoot.appendingPathComponent("Config/airlock.json").path,
            environment: [:]
        )
        #expect(shipped == AirlockConfiguration.development)
        #expect(shipped.http.port == 8080)
        #expect(shipped.scanner.signatureDirectories == ["/var/lib/clamav", "Config/signatures"])
        #expect(shipped.tokens.keys["dev"]?.count == 32)
    }

    @Test func environmentNamesFollowTheKeyPath() {
        #expect(ConfigurationReader.environmentName(for: "http.port") == "AIRLOCK_HTTP_PORT")
        #expect(ConfigurationReader.environmentName(for: "storage.dataDirectory") == "AIRLOCK_STORAGE_DATA_DIRECTORY")
        #expect(ConfigurationReader.environmentName(for: "xep0363.secret") == "AIRLOCK_XEP0363_SECRET")
        #expect(ConfigurationReader.environmentName(for: "http.publicBaseURL") == "AIRLOCK_HTTP_PUBLIC_BASE_URL")
    }

    @Test func environmentOverridesTheFileWhichOverridesDefaults() throws {
        let configuration = try self.load(
            #"{"http": {"port": 9000, "host": "::1"}, "scanner": {"workers": 3}}"#,
            environment: [
                "AIRLOCK_HTTP_PORT": "9443",
                "AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES": "/a, /b",
                "AIRLOCK_POLICY_BLOCK_ON_TYPE_MISMATCH": "false",
                "AIRLOCK_SERVERS": #"{"prosody": {"apiKey": "0123456789abcdef0123"}}"#,
            ]
        )
        #expect(configuration.http.port == 9443)
        #expect(configuration.http.host == "::1")
        #expect(configuration.scanner.workers == 3)
        #expect(configuration.scanner.effectiveWorkers == 3)
        #expect(configuration.scanner.maxFileSize == 100 << 20)
        #expect(configuration.scanner.signatureDirectories == ["/a", "/b"])
        #expect(configuration.policy.blockOnTypeMismatch == false)
        #expect(configuration.servers["prosody"]?.apiKey == "0123456789abcdef0123")
    }

    @Test func aSecretCanComeFromAFile() throws {
        let directory = try TemporaryDirectory()
        let keyFile = try directory.write("xep.secret", Data("from-a-file-secret-that-is-long-enough\n".utf8))
        let configuration = try self.load(#"{"xep0363": {"secretFile": "\#(keyFile)"}}"#)
        #expect(configuration.xep0363.secret == "from-a-file-secret-that-is-long-enough")
    }

    @Test func anUnknownKeyIsNamed() {
        let error = self.error(#"{"scanner": {"maxFileSze": 5}}"#)
        #expect(error?.key == "scanner.maxFileSze")
        #expect(error?.description.contains("unknown key") == true)
    }

    @Test func aBadValueNamesTheKeyAndItsSource() {
        let fromFile = self.error(#"{"http": {"port": "eighty"}}"#)
        #expect(fromFile?.key == "http.port")
        #expect(fromFile?.description.contains("airlock.json") == true)

        let fromEnvironment = self.error("{}", environment: ["AIRLOCK_SCANNER_MAX_FILE_SIZE": "-1"])
        #expect(fromEnvironment?.key == "scanner.maxFileSize")
        #expect(fromEnvironment?.description.contains("AIRLOCK_SCANNER_MAX_FILE_SIZE") == true)

        #expect(self.error(#"{"storage": {"quarantineKey": "c2hvcnQ="}}"#)?.key == "storage.quarantineKey")
        #expect(self.error(#"{"tokens": {"activeKeyId": "missing"}}"#)?.key == "tokens.activeKeyId")
        #expect(self.error(#"{"policy": {"blockedTypes": "x"}}"#) == nil)
        #expect(self.error(#"{"policy": {"blockedTypes": [1]}}"#)?.key == "policy.blockedTypes")
        #expect(self.error(#"{"xep0363": {"pathPrefix": "upload"}}"#)?.key == "xep0363.pathPrefix")
        #expect(self.error(#"{"xep0363": {"secret": "short"}}"#)?.key == "xep0363.secret")
        #expect(self.error(#"{"http": {"tls": {"certificateFile": "/c.pem"}}}"#)?.key == "http.tls")
        // XEP-0363 uploads are recorded under this server name.
        #expect(self.error(#"{"servers": {"xep0363": {"apiKey": "0123456789abcdef0123"}}}"#)?.key == "servers.xep0363")
        // libclamav cannot scan 2 GiB or more.
        #expect(self.error(#"{"scanner": {"maxFileSize": 2147483648, "maxScanSize": 4294967296}}"#)?.key == "scanner.maxFileSize")
        #expect(self.error(#"{"scanner": {"maxFileSize": 2147483647, "maxScanSize": 4294967296}}"#) == nil)
    }

    @Test func malformedJSONIsRefusedWithTheFileName() {
        let error = self.error(#"{"http": {"port": 80,}"#)
        #expect(error?.key == nil)
        #expect(error?.description.contains("is not valid JSON") == true)
    }

    @Test func aMissingExplicitFileIsAnError() {
        #expect(throws: ConfigurationError.self) {
            try AirlockConfiguration.load(file: "/nonexistent/airlock.json", environment: [:])
        }
    }
}
