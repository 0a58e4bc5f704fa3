import Foundation

extension AirlockConfiguration {
    /// `notifications`: signed JSON POSTs to webhooks when transfers are quarantined, recalled, released or
    /// deleted, and when signatures reload (README, "Notifications").
    public struct Notifications: Sendable, Equatable {
        /// `notifications.webhooks` (array, default empty): `{ "url", "secret" or "secretFile", "events" }` each.
        public var webhooks: [Webhook]
        /// `notifications.timeoutSeconds` (int, default 10): longest wait for one webhook's answer.
        public var timeoutSeconds: Int
        /// `notifications.retryMaxSeconds` (int, default 600): the longest wait between two attempts; waits start
        /// at one second and double up to it. An event is retried until its webhook accepts it.
        public var retryMaxSeconds: Int
        /// `notifications.pollSeconds` (int, default 5): how often the outbox is read for events that another
        /// process (an admin command, another node) enqueued; this node's own wake the delivery at once.
        public var pollSeconds: Int

        /// Creates notification settings.
        public init(webhooks: [Webhook] = [], timeoutSeconds: Int = 10, retryMaxSeconds: Int = 600, pollSeconds: Int = 5) {
            self.webhooks = webhooks
            self.timeoutSeconds = timeoutSeconds
            self.retryMaxSeconds = retryMaxSeconds
            self.pollSeconds = pollSeconds
        }
    }

    /// One entry of `notifications.webhooks`.
    public struct Webhook: Sendable, Equatable {
        /// `url`: where events are posted (http or https); also the webhook's name in the outbox, so each URL
        /// appears once.
        public var url: String
        /// `secret` (or `secretFile`): the HMAC-SHA256 key of `X-Airlock-Signature`, at least 16 characters.
        public var secret: String
        /// `events`: the event names it receives (``NotificationEvent/Kind``).
        public var events: [NotificationEvent.Kind]

        /// Creates a webhook.
        public init(url: String, secret: String, events: [NotificationEvent.Kind]) {
            self.url = url
            self.secret = secret
            self.events = events
        }
    }
}

extension AirlockConfiguration.Notifications {
    init(_ reader: inout ConfigurationReader) throws {
        self.timeoutSeconds = try reader.int("notifications.timeoutSeconds", default: 10, in: 1...300)
        self.retryMaxSeconds = try reader.int("notifications.retryMaxSeconds", default: 600, in: 1...86_400)
        self.pollSeconds = try reader.int("notifications.pollSeconds", default: 5, in: 1...3600)
        self.webhooks = []
        for (index, entry) in (try reader.objects("notifications.webhooks") ?? []).enumerated() {
            let webhook = try AirlockConfiguration.Webhook(entry, key: "notifications.webhooks[\(index)]")
            if self.webhooks.contains(where: { $0.url == webhook.url }) {
                throw ConfigurationError(
                    key: "notifications.webhooks[\(index)].url",
                    message: "repeats \(webhook.url): list each URL once, with every event it should receive"
                )
            }
            self.webhooks.append(webhook)
        }
    }
}

extension AirlockConfiguration.Webhook {
    /// Reads one entry; `key` names it in errors (`notifications.webhooks[0]`).
    fileprivate init(_ entry: [String: JSONValue], key: String) throws {
        let known: Set = ["url", "secret", "secretFile", "events"]
        if let unknown = entry.keys.sorted().first(where: { !known.contains($0) }) {
            throw ConfigurationError(key: "\(key).\(unknown)", message: "is not a webhook setting: give url, secret (or secretFile) and events")
        }
        guard case .string(let url) = entry["url"] else {
            throw ConfigurationError(key: "\(key).url", message: "is missing or not a string: give the http:// or https:// URL to post events to")
        }
        guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(), ["http", "https"].contains(scheme),
            let host = components.host, !host.isEmpty, components.user == nil, components.password == nil
        else {
            throw ConfigurationError(
                key: "\(key).url",
                message: "must be an http:// or https:// URL with a host and no user or password, got \"\(url)\""
            )
        }
        self.url = url
        self.secret = try Self.secret(entry, key: key)
        guard case .array(let names) = entry["events"], !names.isEmpty else {
            throw ConfigurationError(key: "\(key).events", message: "is missing or empty: list the events to post, of \(Self.eventNames)")
        }
        var events: [NotificationEvent.Kind] = []
        for name in names {
            guard case .string(let text) = name, let kind = NotificationEvent.Kind(rawValue: text) else {
                let shown = if case .string(let text) = name { "\"\(text)\"" } else { name.kindName }
                throw ConfigurationError(key: "\(key).events", message: "holds \(shown), which is not an event name; use \(Self.eventNames)")
            }
            if !events.contains(kind) { events.append(kind) }
        }
        self.events = events
    }

    private static var eventNames: String {
        NotificationEvent.Kind.allCases.map(\.rawValue).joined(separator: ", ")
    }

    private static func secret(_ entry: [String: JSONValue], key: String) throws -> String {
        let advice = "generate one with `openssl rand -hex 32` and give the receiver the same"
        let secret: String
        switch (entry["secret"], entry["secretFile"]) {
        case (.string(let value), nil):
            secret = value
        case (nil, .string(let path)):
            do {
                secret = try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            } catch {
                throw ConfigurationError(key: "\(key).secretFile", message: "cannot read the secret file \(path): \(error.localizedDescription)")
            }
        case (.some, .some):
            throw ConfigurationError(key: "\(key).secret", message: "is given both as secret and as secretFile; keep one")
        case (nil, nil):
            throw ConfigurationError(key: "\(key).secret", message: "is missing: \(advice)")
        default:
            throw ConfigurationError(key: "\(key).secret", message: "must be a string; \(advice)")
        }
        // A receiver trusts whatever carries a valid signature: the secret must not be guessable.
        guard secret.utf8.count >= 16, Set(secret).count >= 4 else {
            throw ConfigurationError(key: "\(key).secret", message: "is too weak (at least 16 characters, not a repeated pattern); \(advice)")
        }
        return secret
    }
}
