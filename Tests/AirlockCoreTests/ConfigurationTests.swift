import AirlockTestSupport
import Foundation
import Testing

@testable import AirlockCore

@Suite("configuration")
struct ConfigurationTests {
    /// Secrets no built-in default holds (none of them a development value), for tests about other keys.
    static var requiredSecrets: [String: Any] {
        [
        "storage": ["quarantineKey": "jfA2rKx0eWc9mN4bQ7tU1vX3zY5aB8cD0eF2gH4iJ6k="],
        "tokens": ["keys": ["t1": "L2sQ8pR1tV4wX7zA0cE3fH6iK9mN2oP5qS8uW1yB4dG="]],
        "servers": ["s1": ["apiKey": "s1-api-key-0123456789abcdef"]],
        ]
    }

    /// Loads `json` as a file, with ``requiredSecrets`` filled in where `json` does not set them.
    private func load(_ json: String, environment: [String: String] = [:], addingSecrets: Bool = true) throws -> AirlockConfiguration {
        let directory = try TemporaryDirectory()
        var text = json
        if addingSecrets, let object = try? JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] {
            text = String(decoding: try JSONSerialization.data(withJSONObject: Self.merge(Self.requiredSecrets, under: object)), as: UTF8.self)
        }
        let path = try directory.write("airlock.json", Data(text.utf8))
        return try AirlockConfiguration.load(file: path, environment: environment)
    }

    /// `top` with the sections and section keys of `base` it lacks; maps (`servers`, `tokens.keys`) are never
    /// merged entry by entry, as the configuration itself never does across sources.
    static func merge(_ base: [String: Any], under top: [String: Any]) -> [String: Any] {
        var merged = top
        for (section, value) in base {
            guard let existing = top[section] as? [String: Any] else {
                merged[section] = top[section] ?? value
                continue
            }
            guard section != "servers", let keys = value as? [String: Any] else { continue }
            merged[section] = existing.merging(keys) { mine, _ in mine }
        }
        return merged
    }

    /// The configuration error `json` causes, or nil when it loads; any other error fails the test.
    private func error(_ json: String, environment: [String: String] = [:], addingSecrets: Bool = true) -> ConfigurationError? {
        do {
            _ = try self.load(json, environment: environment, addingSecrets: addingSecrets)
            return nil
        } catch let error as ConfigurationError {
            return error
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    static var shippedFile: String { Fixtures.packageRoot.appendingPathComponent("Config/airlock.json").path }

    @Test func theShippedFileIsTheDevelopmentConfiguration() throws {
        let shipped = try AirlockConfiguration.load(file: Self.shippedFile, environment: [:])
        #expect(shipped == AirlockConfiguration.development)
        #expect(shipped.http.port == 8080)
        #expect(shipped.scanner.signatureDirectories == ["/var/lib/clamav", "Config/signatures"])
        #expect(shipped.tokens.keys["dev"]?.count == 32)
    }

    @Test func scannerIsolationIsOnByDefaultAndItsKeysAreChecked() throws {
        let defaults = try self.load("{}")
        #expect(defaults.scanner.isolation == .init(enabled: true, user: "nobody", memoryLimitBytes: 8 << 30))
        #expect(defaults.scanner.processes == 1)
        let set = try self.load(
            #"{"scanner": {"processes": 2, "isolation": {"user": "airlock-scan", "memoryLimitBytes": 0}}}"#,
            environment: ["AIRLOCK_SCANNER_ISOLATION_ENABLED": "false"]
        )
        #expect(set.scanner.isolation == .init(enabled: false, user: "airlock-scan", memoryLimitBytes: 0))
        #expect(set.scanner.processes == 2)
        let tooSmall = self.error(#"{"scanner": {"isolation": {"memoryLimitBytes": 1048576}}}"#)
        #expect(tooSmall?.key == "scanner.isolation.memoryLimitBytes")
        #expect(tooSmall?.description.contains("256 MiB") == true)
        #expect(self.error(#"{"scanner": {"isolation": {"user": ""}}}"#)?.key == "scanner.isolation.user")
        #expect(self.error(#"{"scanner": {"processes": 0}}"#)?.key == "scanner.processes")
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
        #expect(configuration.servers["prosody"]?.apiKeys == ["0123456789abcdef0123"])
    }

    @Test func aSecretCanComeFromAFile() throws {
        let directory = try TemporaryDirectory()
        let keyFile = try directory.write("xep.secret", Data("from-a-file-secret-that-is-long-enough\n".utf8))
        let configuration = try self.load(#"{"xep0363": {"enabled": true, "secretFile": "\#(keyFile)"}}"#)
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
        #expect(self.error(#"{"xep0363": {"enabled": true, "secret": "short"}}"#)?.key == "xep0363.secret")
        #expect(self.error(#"{"http": {"tls": {"certificateFile": "/c.pem"}}}"#)?.key == "http.tls")
        // XEP-0363 uploads are recorded under this server name.
        #expect(self.error(#"{"servers": {"xep0363": {"apiKey": "0123456789abcdef0123"}}}"#)?.key == "servers.xep0363")
        // libclamav cannot scan 2 GiB or more.
        #expect(self.error(#"{"scanner": {"maxFileSize": 2147483648, "maxScanSize": 8589934592}}"#)?.key == "scanner.maxFileSize")
        #expect(self.error(#"{"scanner": {"maxFileSize": 2147483647, "maxScanSize": 8589934592}}"#) == nil)
    }

    /// `ledger.groupCommitMicroseconds`: 2 ms unless set, 0 turns group commit off, and a window outside 0…1 s is
    /// refused with the key named.
    @Test func theGroupCommitWindowHasADefaultAnOffSwitchAndBounds() throws {
        #expect(try self.load("{}").ledger.groupCommitMicroseconds == 2000)
        #expect(try self.load(#"{"ledger": {"groupCommitMicroseconds": 0}}"#).ledger.groupCommitMicroseconds == 0)
        let fromEnvironment = try self.load("{}", environment: ["AIRLOCK_LEDGER_GROUP_COMMIT_MICROSECONDS": "500"])
        #expect(fromEnvironment.ledger.groupCommitMicroseconds == 500)
        #expect(self.error(#"{"ledger": {"groupCommitMicroseconds": 1000001}}"#)?.key == "ledger.groupCommitMicroseconds")
        #expect(self.error(#"{"ledger": {"groupCommitMicroseconds": -1}}"#)?.key == "ledger.groupCommitMicroseconds")
        #expect(self.error("{}", environment: ["AIRLOCK_LEDGER_GROUP_COMMIT_MICROSECONDS": "soon"])?.key == "ledger.groupCommitMicroseconds")
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

/// Issue 13: configuration holes found by an outside review, each reproduced and refused.
extension ConfigurationTests {
    static let productionEnvironment = [
        "AIRLOCK_SERVERS": #"{"prod": {"apiKey": "prod-api-key-0123456789abcdef"}}"#,
        "AIRLOCK_TOKENS_KEYS": #"{"prod": "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="}"#,
        "AIRLOCK_TOKENS_ACTIVE_KEY_ID": "prod",
    ]

    /// Finding 1: with the shipped file, maps from the environment used to merge with the file's, leaving the
    /// development server and token key active.
    @Test func mapsFromTheEnvironmentReplaceTheFilesMapWhole() throws {
        let configuration = try AirlockConfiguration.load(file: Self.shippedFile, environment: Self.productionEnvironment)
        #expect(Array(configuration.servers.keys) == ["prod"])
        #expect(Array(configuration.tokens.keys.keys) == ["prod"])
        #expect(configuration.tokens.activeKeyId == "prod")
        // The file's entries under the replaced maps are not "unknown keys" either.
        #expect(configuration.servers["prod"]?.apiKeys == ["prod-api-key-0123456789abcdef"])
    }

    /// Finding 2: built-in defaults held the development secrets and turned XEP-0363 on.
    @Test func builtInDefaultsHoldNoSecret() throws {
        #expect(self.error("{}", addingSecrets: false)?.key == "storage.quarantineKey")
        #expect(self.error(#"{"storage": {"quarantineKey": "jfA2rKx0eWc9mN4bQ7tU1vX3zY5aB8cD0eF2gH4iJ6k="}}"#, addingSecrets: false)?.key == "tokens.keys")
        let noServers = self.error(
            #"{"storage": {"quarantineKey": "jfA2rKx0eWc9mN4bQ7tU1vX3zY5aB8cD0eF2gH4iJ6k="}, "tokens": {"keys": {"t1": "L2sQ8pR1tV4wX7zA0cE3fH6iK9mN2oP5qS8uW1yB4dG="}}}"#,
            addingSecrets: false
        )
        #expect(noServers?.key == "servers")
        let minimal = try self.load("{}")
        #expect(minimal.xep0363.enabled == false)
        #expect(minimal.xep0363.secret.isEmpty)
        #expect(minimal.developmentSecretKeys.isEmpty)
        // Enabled without a secret is an error naming the key.
        #expect(self.error(#"{"xep0363": {"enabled": true}}"#)?.key == "xep0363.secret")
    }

    /// A shipped development secret is accepted only on a loopback listener; elsewhere every such key is named.
    @Test func developmentSecretsOnlyOnLoopback() throws {
        for host in ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"] {
            #expect(AirlockConfiguration.isLoopback(host), "\(host)")
            #expect(throws: Never.self) { try AirlockConfiguration.load(file: Self.shippedFile, environment: ["AIRLOCK_HTTP_HOST": host]) }
        }
        for host in ["0.0.0.0", "::", "192.0.2.10", "example.org", "127.0.0.1.example.org", "128.0.0.1"] {
            #expect(!AirlockConfiguration.isLoopback(host), "\(host)")
        }
        let error = try #require(self.shippedError(environment: ["AIRLOCK_HTTP_HOST": "0.0.0.0"]))
        for key in ["storage.quarantineKey", "tokens.keys.dev", "servers.dev.apiKey", "xep0363.secret"] {
            #expect(error.description.contains(key), "\(key) not named in: \(error)")
        }
        // One development secret left among production ones is still refused, and only it is named.
        var environment = Self.productionEnvironment
        environment["AIRLOCK_HTTP_HOST"] = "0.0.0.0"
        environment["AIRLOCK_STORAGE_QUARANTINE_KEY"] = "jfA2rKx0eWc9mN4bQ7tU1vX3zY5aB8cD0eF2gH4iJ6k="
        environment["AIRLOCK_XEP0363_SECRET"] = "prod-xep0363-secret-0123456789abcdef-0123"
        #expect(throws: Never.self) { try AirlockConfiguration.load(file: Self.shippedFile, environment: environment) }
        environment["AIRLOCK_SERVERS"] = #"{"prod": {"apiKey": "dev-api-key-change-me"}}"#
        let left = try #require(self.shippedError(environment: environment))
        #expect(left.key == "servers.prod.apiKey")
        #expect(!left.description.contains("tokens.keys"))
    }

    private func shippedError(environment: [String: String]) -> ConfigurationError? {
        do {
            _ = try AirlockConfiguration.load(file: Self.shippedFile, environment: environment)
            return nil
        } catch {
            return error as? ConfigurationError
        }
    }

    /// Finding 9: the same API key under two names used to be accepted, the last name silently winning.
    @Test func oneAPIKeyUnderTwoServerNamesIsRefused() {
        let error = self.error(#"{"servers": {"a": {"apiKey": "shared-key-0123456789abc"}, "b": {"apiKey": "shared-key-0123456789abc"}}}"#)
        #expect(error?.description.contains("servers a and b have the same API key") == true)
        let rotated = self.error(#"{"servers": {"a": {"apiKey": "a-key-0123456789abcdef", "apiKeys": ["b-key-0123456789abcdef"]}, "b": {"apiKey": "b-key-0123456789abcdef"}}}"#)
        #expect(rotated?.description.contains("servers a and b") == true)
    }

    @Test func mutualTLSNeedsCertificateNamesForEveryServer() throws {
        let tls = #""http": {"tls": {"certificateFile": "/c.pem", "privateKeyFile": "/k.pem", "clientCAFile": "/ca.pem"}}"#
        #expect(self.error("{\(tls)}")?.key == "servers.s1.certificateNames")
        let bound = try self.load(#"{\#(tls), "servers": {"s1": {"certificateNames": ["XMPP.example.org"]}}}"#)
        // With mutual TLS the certificate names the server; the API key is optional.
        #expect(bound.servers["s1"] == .init(apiKeys: [], certificateNames: ["xmpp.example.org"]))
        let twice = self.error(#"{\#(tls), "servers": {"a": {"certificateNames": ["x.org"]}, "b": {"certificateNames": ["x.org"]}}}"#)
        #expect(twice?.key == "servers.b.certificateNames")
        // Without mutual TLS a server needs a key.
        #expect(self.error(#"{"servers": {"s1": {"certificateNames": ["x.org"]}}}"#)?.key == "servers.s1.apiKey")
    }

    /// libclamav counts rescans of embedded content toward maxScanSize; equal limits quarantined random files.
    @Test func maxScanSizeBelowTwiceMaxFileSizeIsRefusedWithAdvice() throws {
        let error = self.error(#"{"scanner": {"maxFileSize": 1048576, "maxScanSize": 1048576}}"#)
        #expect(error?.key == "scanner.maxScanSize")
        #expect(error?.description.contains("4194304") == true)
        #expect(try self.load(#"{"scanner": {"maxFileSize": 1048576, "maxScanSize": 2097152}}"#).scanner.maxScanSize == 2 << 20)
    }

    /// Every secret in a map also takes the `<key>File` form.
    @Test func secretsInMapsComeFromFiles() throws {
        let directory = try TemporaryDirectory()
        let tokenKey = try directory.write("t2.key", Data("L2sQ8pR1tV4wX7zA0cE3fH6iK9mN2oP5qS8uW1yB4dG=\n".utf8))
        let quarantineKey = try directory.write("q.key", Data("jfA2rKx0eWc9mN4bQ7tU1vX3zY5aB8cD0eF2gH4iJ6k=\n".utf8))
        let configuration = try self.load(
            #"""
            {"tokens": {"activeKeyId": "t2", "keys": {"t2File": "\#(tokenKey)"}},
             "storage": {"quarantineKeys": {"2026File": "\#(quarantineKey)"}, "activeQuarantineKeyId": "2026"}}
            """#
        )
        #expect(Array(configuration.tokens.keys.keys) == ["t2"])
        #expect(configuration.storage.quarantineKeys["2026"]?.count == 32)
        #expect(configuration.storage.activeQuarantineKeyId == "2026")
        // From the environment too, where the map replaces the file's.
        let fromEnvironment = try self.load(
            "{}",
            environment: ["AIRLOCK_TOKENS_KEYS": #"{"e1File": "\#(tokenKey)"}"#, "AIRLOCK_TOKENS_ACTIVE_KEY_ID": "e1"]
        )
        #expect(Array(fromEnvironment.tokens.keys.keys) == ["e1"])
        let both = self.error(#"{"tokens": {"keys": {"t1": "L2sQ8pR1tV4wX7zA0cE3fH6iK9mN2oP5qS8uW1yB4dG=", "t1File": "\#(tokenKey)"}}}"#)
        #expect(both?.key == "tokens.keys.t1")
    }

    @Test func quarantineKeysAndTheSingleKey() throws {
        let single = try self.load("{}")
        #expect(single.storage.activeQuarantineKeyId == "default")
        let both = try self.load(
            #"{"storage": {"quarantineKeys": {"new": "L2sQ8pR1tV4wX7zA0cE3fH6iK9mN2oP5qS8uW1yB4dG="}, "activeQuarantineKeyId": "new"}}"#
        )
        #expect(Set(both.storage.quarantineKeys.keys) == ["default", "new"])
        #expect(both.storage.activeQuarantineKey == Data(base64Encoded: "L2sQ8pR1tV4wX7zA0cE3fH6iK9mN2oP5qS8uW1yB4dG="))
        #expect(
            self.error(#"{"storage": {"quarantineKeys": {"new": "L2sQ8pR1tV4wX7zA0cE3fH6iK9mN2oP5qS8uW1yB4dG="}}}"#)?.key
                == "storage.activeQuarantineKeyId"
        )
    }

    @Test func metricsBearerToken() throws {
        #expect(try self.load("{}").metrics.bearerToken == nil)
        #expect(try self.load(#"{"metrics": {"bearerToken": "scrape-token-0123456789"}}"#).metrics.bearerToken == "scrape-token-0123456789")
        #expect(self.error(#"{"metrics": {"bearerToken": "short"}}"#)?.key == "metrics.bearerToken")
    }
}
