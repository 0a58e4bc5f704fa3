import Foundation
import Testing

@testable import AirlockCore

@Suite("configuration: http.cors")
struct CORSConfigurationTests {
    static let key = "http.cors.allowedOrigins"

    /// The configuration of `http` (merged with the secrets every configuration needs) and `environment`.
    private func load(http: [String: Any] = [:], environment: [String: String] = [:]) throws -> AirlockConfiguration {
        var object = ConfigurationTests.requiredSecrets
        object["http"] = http
        let data = try JSONSerialization.data(withJSONObject: object)
        return try AirlockConfiguration.parse(data, fileName: "airlock.json", environment: environment)
    }

    private func origins(_ listed: [String]) throws -> [String] {
        try self.load(http: ["cors": ["allowedOrigins": listed]]).http.cors.allowedOrigins
    }

    /// The configuration error for `listed`, or nil when it loads.
    private func error(_ listed: [String]) -> ConfigurationError? {
        do {
            _ = try self.origins(listed)
            return nil
        } catch {
            return error as? ConfigurationError
        }
    }

    @Test func everyOriginByDefault() throws {
        let cors = try self.load().http.cors
        #expect(cors.allowedOrigins == ["*"])
        #expect(cors.allowsEveryOrigin)
        #expect(AirlockConfiguration.development.http.cors.allowedOrigins == ["*"])
    }

    @Test func originsAreHeldAsBrowsersSendThem() throws {
        #expect(
            try self.origins([
                "HTTPS://Chat.Example.org:443", "http://127.0.0.1:5280", "http://localhost:80", "https://[::1]:8443", "https://chat.example.org",
            ])
                == ["https://chat.example.org", "http://127.0.0.1:5280", "http://localhost", "https://[::1]:8443"]
        )
        // An empty list lets no page in.
        let none = try self.load(http: ["cors": ["allowedOrigins": [String]()]]).http.cors
        #expect(none.allowedOrigins.isEmpty && !none.allowsEveryOrigin)
    }

    @Test func theEnvironmentTakesAListOrAJSONArray() throws {
        let listed = try self.load(environment: ["AIRLOCK_HTTP_CORS_ALLOWED_ORIGINS": "https://chat.example.org, https://movim.example.org"])
        #expect(listed.http.cors.allowedOrigins == ["https://chat.example.org", "https://movim.example.org"])
        let array = try self.load(
            http: ["cors": ["allowedOrigins": ["https://file.example.org"]]],
            environment: ["AIRLOCK_HTTP_CORS_ALLOWED_ORIGINS": #"["https://web.example.org"]"#]
        )
        #expect(array.http.cors.allowedOrigins == ["https://web.example.org"])
    }

    @Test(arguments: [
        "chat.example.org", "https://chat.example.org/", "https://chat.example.org/converse", "https://chat.example.org?x=1",
        "https://user@chat.example.org", "https://chat.example.org:0", "https://chat.example.org:99999", "https://chat.example.org:",
        "https://", "://chat.example.org", "https://chät.example.org", "https://chat..example.org", "https://[::1", "null", "",
    ])
    func aValueThatIsNotAnOriginIsRefusedNamingTheKey(value: String) {
        let error = self.error([value])
        #expect(error?.key == Self.key)
        #expect(error?.message.contains("scheme://host[:port]") == true)
    }

    @Test func everyOriginGoesAlone() {
        let error = self.error(["*", "https://chat.example.org"])
        #expect(error?.key == Self.key)
        #expect(error?.message.contains(#"give ["*"] alone"#) == true)
    }

    @Test func aMisspelledKeyIsUnknown() {
        do {
            _ = try self.load(http: ["cors": ["allowedOrigin": ["*"]]])
            Issue.record("a misspelled key loaded")
        } catch {
            #expect((error as? ConfigurationError)?.key == "http.cors.allowedOrigin")
        }
    }
}
