import AirlockTestSupport
import Foundation
import Testing

@testable import AirlockCore

/// `notifications.webhooks` and its siblings (README, "Notifications").
@Suite("notification configuration")
struct NotificationConfigurationTests {
    static let secret = "whsec-0f3c9a7d41e2b8c6"

    /// Loads the required secrets plus `notifications`, with `environment` on top.
    static func load(notifications: Any?, environment: [String: String] = [:]) throws -> AirlockConfiguration {
        var object = ConfigurationTests.requiredSecrets
        if let notifications { object["notifications"] = notifications }
        let data = try JSONSerialization.data(withJSONObject: object)
        return try AirlockConfiguration.parse(data, fileName: "test.json", environment: environment)
    }

    /// The error `notifications` causes; nil when it loads.
    static func error(_ notifications: Any?, environment: [String: String] = [:]) -> ConfigurationError? {
        do {
            _ = try Self.load(notifications: notifications, environment: environment)
            return nil
        } catch let error as ConfigurationError {
            return error
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    static func webhook(_ changes: [String: Any?] = [:]) -> [String: Any] {
        var entry: [String: Any] = ["url": "https://im.example.org/airlock-events", "secret": Self.secret, "events": ["transfer.quarantined"]]
        for (key, value) in changes { entry[key] = value }
        return entry
    }

    @Test func noWebhooksByDefault() throws {
        let configuration = try Self.load(notifications: nil)
        #expect(configuration.notifications == AirlockConfiguration.Notifications())
        #expect(configuration.notifications.webhooks.isEmpty)
        #expect(configuration.notifications.timeoutSeconds == 10)
        #expect(configuration.notifications.retryMaxSeconds == 600)
    }

    @Test func webhooksFromTheFileAndTheEnvironment() throws {
        let directory = try TemporaryDirectory()
        let secretFile = try directory.write("hook.secret", Data("file-secret-abcdef0123456789\n".utf8))
        let file = try Self.load(notifications: [
            "webhooks": [
                Self.webhook(["events": ["quarantine.released", "transfer.quarantined", "quarantine.released"]]),
                Self.webhook(["url": "http://127.0.0.1:9000/hook", "secret": nil, "secretFile": secretFile, "events": ["signatures.reloadFailed"]]),
            ],
            "timeoutSeconds": 3,
        ])
        #expect(
            file.notifications.webhooks == [
                AirlockConfiguration.Webhook(
                    url: "https://im.example.org/airlock-events",
                    secret: Self.secret,
                    events: [.quarantineReleased, .transferQuarantined]
                ),
                AirlockConfiguration.Webhook(
                    url: "http://127.0.0.1:9000/hook",
                    secret: "file-secret-abcdef0123456789",
                    events: [.signaturesReloadFailed]
                ),
            ]
        )
        #expect(file.notifications.timeoutSeconds == 3)

        // The environment replaces the file's list whole.
        let environment = [
            "AIRLOCK_NOTIFICATIONS_WEBHOOKS": #"[{"url": "https://bot.example.org/", "secret": "\#(Self.secret)", "events": ["transfer.recalled"]}]"#,
            "AIRLOCK_NOTIFICATIONS_RETRY_MAX_SECONDS": "30",
        ]
        let overridden = try Self.load(notifications: ["webhooks": [Self.webhook()]], environment: environment)
        #expect(overridden.notifications.webhooks.map(\.url) == ["https://bot.example.org/"])
        #expect(overridden.notifications.webhooks.first?.events == [.transferRecalled])
        #expect(overridden.notifications.retryMaxSeconds == 30)
    }

    @Test func badWebhooksNameTheKey() {
        let cases: [(Any, String, String)] = [
            (
                ["webhooks": [Self.webhook(["events": ["transfer.quarantined", "transfer.exploded"]])]], "notifications.webhooks[0].events",
                "transfer.exploded"
            ),
            (["webhooks": [Self.webhook(["events": []])]], "notifications.webhooks[0].events", "missing or empty"),
            (["webhooks": [Self.webhook(["url": "ftp://im.example.org/"])]], "notifications.webhooks[0].url", "http:// or https://"),
            (["webhooks": [Self.webhook(["url": "https://user:pw@im.example.org/"])]], "notifications.webhooks[0].url", "no user"),
            (["webhooks": [Self.webhook(["url": nil])]], "notifications.webhooks[0].url", "missing"),
            (["webhooks": [Self.webhook(["secret": "short"])]], "notifications.webhooks[0].secret", "too weak"),
            (["webhooks": [Self.webhook(["secret": String(repeating: "ab", count: 16)])]], "notifications.webhooks[0].secret", "too weak"),
            (["webhooks": [Self.webhook(["secret": nil])]], "notifications.webhooks[0].secret", "openssl rand"),
            (["webhooks": [Self.webhook(["secretFile": "/nonexistent/secret"])]], "notifications.webhooks[0].secret", "both"),
            (
                ["webhooks": [Self.webhook(["secret": nil, "secretFile": "/nonexistent/secret"])]], "notifications.webhooks[0].secretFile",
                "cannot read"
            ),
            (["webhooks": [Self.webhook(["method": "PUT"])]], "notifications.webhooks[0].method", "not a webhook setting"),
            (["webhooks": [Self.webhook(), Self.webhook()]], "notifications.webhooks[1].url", "repeats"),
            (["webhooks": ["https://im.example.org/"]], "notifications.webhooks", "array of objects"),
            (["webhooks": [Self.webhook()], "timeoutSeconds": 0], "notifications.timeoutSeconds", "between"),
        ]
        for (notifications, key, words) in cases {
            let error = Self.error(notifications)
            #expect(error?.key == key, "\(notifications)")
            #expect(error?.description.contains(words) == true, "\(error?.description ?? "loaded") for \(notifications)")
        }
        // From the environment too, naming the key.
        let error = Self.error(
            nil,
            environment: ["AIRLOCK_NOTIFICATIONS_WEBHOOKS": #"[{"url": "https://x.example.org/", "secret": "\#(Self.secret)", "events": ["nope"]}]"#]
        )
        #expect(error?.key == "notifications.webhooks[0].events")
    }
}
