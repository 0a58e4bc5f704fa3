/// What a configuration reload would change (``AirlockConfiguration/reloading(to:)``).
public struct ConfigurationChange: Sendable, Equatable {
    /// The configuration to put in force: the new file's values, with the running values of the keys that only a
    /// restart can change.
    public var applied: AirlockConfiguration
    /// The keys whose new values take effect now.
    public var changed: [String]
    /// The keys whose new values wait for a restart (their running values stay).
    public var needRestart: [String]
}

extension AirlockConfiguration {
    /// Splits a newly read configuration into what a running server takes at once (`servers`, `tokens`, the
    /// XEP-0363 secret, `policy`, `limits`, `retention`, `metrics`, `http.publicBaseURL`, the TLS certificate and
    /// key, `http.minimumUploadBytesPerSecond`, the scanner's limits and reload settings) and what only a restart
    /// changes (the listener, storage, the ledger, the node, the scanner processes and the XEP-0363 and CORS routes,
    /// which are built into the router).
    public func reloading(to next: AirlockConfiguration) -> ConfigurationChange {
        var applied = next
        var changed: [String] = []
        var needRestart: [String] = []

        func live<Value: Equatable>(_ key: String, _ path: WritableKeyPath<AirlockConfiguration, Value>) {
            if self[keyPath: path] != applied[keyPath: path] { changed.append(key) }
        }
        func restartOnly<Value: Equatable>(_ key: String, _ path: WritableKeyPath<AirlockConfiguration, Value>) {
            guard self[keyPath: path] != next[keyPath: path] else { return }
            needRestart.append(key)
            applied[keyPath: path] = self[keyPath: path]
        }

        restartOnly("http.host", \.http.host)
        restartOnly("http.port", \.http.port)
        restartOnly("http.idleTimeoutSeconds", \.http.idleTimeoutSeconds)
        restartOnly("http.maxConnections", \.http.maxConnections)
        restartOnly("http.tls.clientCAFile", \.http.tls.clientCAFile)
        restartOnly("http.cors", \.http.cors)
        restartOnly("storage", \.storage)
        restartOnly("ledger", \.ledger)
        restartOnly("node.id", \.node)
        restartOnly("scanner.workers", \.scanner.workers)
        restartOnly("scanner.processes", \.scanner.processes)
        restartOnly("scanner.isolation", \.scanner.isolation)
        restartOnly("xep0363.enabled", \.xep0363.enabled)
        restartOnly("xep0363.pathPrefix", \.xep0363.pathPrefix)
        // TLS cannot be switched on or off without a restart (the listener is built for one or the other).
        if (self.http.tls.certificateFile == nil) != (next.http.tls.certificateFile == nil) {
            needRestart.append("http.tls.certificateFile")
            applied.http.tls.certificateFile = self.http.tls.certificateFile
            applied.http.tls.privateKeyFile = self.http.tls.privateKeyFile
        } else {
            live("http.tls.certificateFile", \.http.tls.certificateFile)
            live("http.tls.privateKeyFile", \.http.tls.privateKeyFile)
        }

        live("http.publicBaseURL", \.http.publicBaseURL)
        live("http.minimumUploadBytesPerSecond", \.http.minimumUploadBytesPerSecond)
        live("servers", \.servers)
        live("tokens", \.tokens)
        live("xep0363.secret", \.xep0363.secret)
        live("policy", \.policy)
        live("limits", \.limits)
        live("retention", \.retention)
        live("metrics", \.metrics)
        live("scanner", \.scanner)
        live("retroscan", \.retroscan)
        live("quotas", \.quotas)
        live("notifications.webhooks", \.notifications.webhooks)
        restartOnly("notifications.timeoutSeconds", \.notifications.timeoutSeconds)
        restartOnly("notifications.retryMaxSeconds", \.notifications.retryMaxSeconds)
        restartOnly("notifications.pollSeconds", \.notifications.pollSeconds)
        return ConfigurationChange(applied: applied, changed: changed, needRestart: needRestart)
    }
}
