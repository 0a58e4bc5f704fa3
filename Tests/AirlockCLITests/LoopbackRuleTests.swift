import AirlockTestSupport
import Foundation
import Testing

/// Issue 13: the shipped development secrets are accepted only while `http.host` is a loopback address. The
/// decision itself is tested in ConfigurationTests; here the real binary refuses to start, before it binds anything.
@Suite("development secrets outside loopback")
struct LoopbackRuleTests {
    @Test func serveOnANonLoopbackAddressWithTheShippedSecretsExitsTwoNamingEveryKey() async throws {
        let data = try TemporaryDirectory()
        var environment = AirlockCommand.hermetic
        environment["AIRLOCK_HTTP_HOST"] = "0.0.0.0"
        environment["AIRLOCK_HTTP_PORT"] = "0"
        environment["AIRLOCK_STORAGE_DATA_DIRECTORY"] = data.file("var")
        environment["AIRLOCK_STORAGE_QUARANTINE_DIRECTORY"] = data.file("Quarantine")
        let result = try await AirlockCommand.run(["serve"], environment: environment)
        #expect(result.status == 2)
        for key in ["storage.quarantineKey", "tokens.keys.dev", "servers.dev.apiKey", "xep0363.secret"] {
            #expect(result.standardError.contains(key), "\(key) not named in: \(result.standardError)")
        }
        #expect(result.standardError.contains("loopback"))
        // Refused before anything was created or bound.
        #expect(!FileManager.default.fileExists(atPath: data.file("var")))
    }
}
