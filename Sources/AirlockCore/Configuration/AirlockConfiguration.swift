public import Foundation

/// Airlock's whole configuration (DESIGN §4): `Config/airlock.json`, `AIRLOCK_*` environment overrides, built-in defaults.
public struct AirlockConfiguration: Sendable, Equatable {
    /// The HTTP listener.
    public var http: HTTP
    /// Where ledger, clean files and quarantine live.
    public var storage: Storage
    /// Signatures and libclamav limits.
    public var scanner: Scanner
    /// Request limits.
    public var limits: Limits
    /// Which detected types are refused.
    public var policy: Policy
    /// Download token signing.
    public var tokens: Tokens
    /// IM servers allowed to hand off files, by name.
    public var servers: [String: Server]
    /// The XEP-0363 external upload service.
    public var xep0363: XEP0363
    /// How long bytes are kept.
    public var retention: Retention
    /// `/metrics` protection.
    public var metrics: Metrics
    /// Where the ledger lives.
    public var ledger: LedgerSettings
    /// This node of a cluster.
    public var node: Node
    /// Rescanning delivered content after a signature change.
    public var retroscan: Retroscan

    /// `retroscan`: after every signature change, the clean content handed off recently is scanned again with the
    /// new signatures, and what they detect is recalled.
    public struct Retroscan: Sendable, Equatable {
        /// `retroscan.windowHours` (168; 0 = off): how far back.
        public var windowHours: Int
        /// `retroscan.workers` (1): scan workers it may use at once; the others stay with live uploads.
        public var workers: Int
    }
    /// Webhooks.
    public var notifications: Notifications
    /// Upload quotas per uploader and per IM server.
    public var quotas = Quotas()

    /// `node`: this process among several on one ledger and one store.
    public struct Node: Sendable, Equatable {
        /// `node.id` (default: the host name): this node's name, recorded on transfers and audit entries.
        public var id: String
    }

    /// `ledger`: SQLite (embedded, the default) or PostgreSQL (several nodes).
    public struct LedgerSettings: Sendable, Equatable {
        /// `ledger.backend`: `sqlite` (default) or `postgresql`.
        public var backend: Backend
        /// `ledger.groupCommitMicroseconds` (default 2000; 0 = off): how long a hand-off ready to be recorded waits
        /// for others, so that their files, directory entries and rows are made durable together.
        public var groupCommitMicroseconds: Int

        /// A ledger engine.
        public enum Backend: Sendable, Equatable {
            /// `<storage.dataDirectory>/airlock.sqlite`.
            case sqlite
            /// A PostgreSQL server (`ledger.postgresql`).
            case postgresql(PostgreSQL)
        }
    }

    /// `ledger.postgresql`: where the PostgreSQL ledger is.
    public struct PostgreSQL: Sendable, Equatable {
        /// The server's host name or address, or nil with a Unix socket.
        public var host: String?
        /// The directory of the server's Unix socket (libpq's `host=/path` query parameter), if any.
        public var socketDirectory: String?
        /// The port (default 5432); also names the Unix socket (`.s.PGSQL.<port>`).
        public var port: Int
        /// The user.
        public var username: String
        /// The password: from the URL or `ledger.postgresql.passwordFile`.
        public var password: String?
        /// The database (default: the user's name).
        public var database: String
        /// `sslmode`: `disable`, `require` (encrypted, the certificate not checked) or `verify-full` (the default).
        public var sslMode: SSLMode
        /// `ledger.postgresql.poolSize` (default 10): most connections this node opens.
        public var poolSize: Int

        /// libpq's `sslmode` values Airlock accepts.
        public enum SSLMode: String, Sendable, Equatable, CaseIterable {
            case disable
            case require
            case verifyFull = "verify-full"
        }
    }

    /// The file read when no `--config` is given, relative to the working directory.
    public static let defaultFile = "Config/airlock.json"

    /// `http`: the listener.
    public struct HTTP: Sendable, Equatable {
        /// `http.host` (string, default `127.0.0.1`): address to bind.
        public var host: String
        /// `http.port` (int, default 8080; 0 picks a free port): port to bind.
        public var port: Int
        /// `http.publicBaseURL` (string): the base of download URLs handed to recipients.
        public var publicBaseURL: String
        /// `http.tls`: certificate and key for HTTPS; `clientCAFile` requires client certificates on the IM-server API.
        public var tls: TLS
        /// `http.idleTimeoutSeconds` (int, default 30): a connection that completes no request header and sends
        /// no body bytes for this long is closed, so slow clients (slowloris) cannot hold connections open.
        public var idleTimeoutSeconds: Int
        /// `http.maxConnections` (int, default 1024): most connections served at once; further connections wait
        /// in the listen backlog until one closes.
        public var maxConnections: Int
        /// `http.minimumUploadBytesPerSecond` (int, default 1024; 0 disables): once a request body has been arriving
        /// for `idleTimeoutSeconds`, it is cut off with 408 if its average rate is lower, so a client trickling
        /// body bytes just fast enough to dodge the idle timeout cannot hold a connection for hours.
        public var minimumUploadBytesPerSecond: Int
        /// `http.cors`: which browser origins may upload and download on the XEP-0363 and download paths.
        public var cors: CORS
    }

    /// `http.tls`: all paths optional; certificate and key go together.
    public struct TLS: Sendable, Equatable {
        /// `http.tls.certificateFile`: PEM certificate chain.
        public var certificateFile: String?
        /// `http.tls.privateKeyFile`: PEM private key.
        public var privateKeyFile: String?
        /// `http.tls.clientCAFile`: PEM CA bundle that IM-server client certificates must chain to.
        public var clientCAFile: String?
        /// Creates TLS settings.
        public init(certificateFile: String? = nil, privateKeyFile: String? = nil, clientCAFile: String? = nil) {
            self.certificateFile = certificateFile
            self.privateKeyFile = privateKeyFile
            self.clientCAFile = clientCAFile
        }
    }

    /// `storage`: directories and the quarantine encryption keys.
    public struct Storage: Sendable, Equatable {
        /// `storage.dataDirectory` (default `var`): ledger, staging and clean files.
        public var dataDirectory: String
        /// `storage.quarantineDirectory` (default `Quarantine`): encrypted quarantined files.
        public var quarantineDirectory: String
        /// `storage.quarantineKeys` (key id → base64 of 32 bytes, or `IDFile`): AES-GCM keys for quarantined bytes;
        /// retired keys still decrypt until `airlock quarantine rekey` has moved every file to the active one.
        /// The single `storage.quarantineKey` (or `quarantineKeyFile`) is the key id `default`.
        public var quarantineKeys: [String: Data]
        /// `storage.activeQuarantineKeyId`: the key new quarantined files are encrypted with (`default` with the
        /// single `quarantineKey`).
        public var activeQuarantineKeyId: String

        /// The key id the single `storage.quarantineKey` is known by.
        public static let singleKeyId = "default"

        /// The key that encrypts new quarantined files.
        public var activeQuarantineKey: Data {
            // The configuration checks that the active id names one of the keys.
            self.quarantineKeys[self.activeQuarantineKeyId] ?? Data()
        }
    }

    /// `scanner`: signatures and limits.
    public struct Scanner: Sendable, Equatable, Codable {
        /// `scanner.signatureDirectories`: every directory that exists and holds signatures is loaded.
        public var signatureDirectories: [String]
        /// `scanner.maxFileSize` (bytes): larger files or archive members are unscannable.
        public var maxFileSize: Int
        /// `scanner.maxScanSize` (bytes): most content scanned per file, archive members included.
        public var maxScanSize: Int
        /// `scanner.maxRecursion`: deepest archive nesting.
        public var maxRecursion: Int
        /// `scanner.maxFiles`: most archive members.
        public var maxFiles: Int
        /// `scanner.scanTimeoutSeconds`: longest scan.
        public var scanTimeoutSeconds: Int
        /// `scanner.workers` (0 = one per core): threads for blocking scans.
        public var workers: Int
        /// `scanner.processes`: scanner processes, each with one engine and `workers` threads (isolation only).
        public var processes: Int
        /// `scanner.isolation`: the confined scanner process.
        public var isolation: Isolation
        /// `scanner.reloadCheckSeconds` (60; 0 = on request only): how often `serve` looks for changed signature
        /// files, as clamd's SelfCheck does.
        public var reloadCheckSeconds: Int
        /// `scanner.reloadMode`: how a reload replaces the engine.
        public var reloadMode: ReloadMode

        /// `scanner.reloadMode`.
        public enum ReloadMode: String, Sendable, Equatable, Codable {
            /// The new engine compiles beside the old one (memory for two), then takes over: no upload waits.
            case concurrent
            /// The old engine is freed first (memory for one); uploads that arrive meanwhile wait for the new one.
            case blocking
        }

        /// These settings without the keys that only say when and how to reload: what an engine is built from.
        public var engineSettings: Self {
            var settings = self
            settings.reloadCheckSeconds = 0
            settings.reloadMode = .concurrent
            return settings
        }

        /// `scanner.isolation`: libclamav and libmagic parse uploads in a supervised, confined child process.
        public struct Isolation: Sendable, Equatable, Codable {
            /// `scanner.isolation.enabled` (true): off for debugging only; `serve` warns when it is.
            public var enabled: Bool
            /// `scanner.isolation.user` (`nobody`): the user the scanner runs as when started as root.
            public var user: String
            /// `scanner.isolation.memoryLimitBytes`: the scanner's address-space limit (RLIMIT_AS); 0 = none.
            public var memoryLimitBytes: Int
        }

        /// The number of scan threads to run: `workers`, or one per core when 0.
        public var effectiveWorkers: Int {
            self.workers > 0 ? self.workers : ProcessInfo.processInfo.activeProcessorCount
        }
    }

    /// `limits`: request limits.
    public struct Limits: Sendable, Equatable {
        /// `limits.maxUploadBytes`: larger uploads are refused with 413.
        public var maxUploadBytes: Int
        /// `limits.maxStoredBytes` (absent: unlimited): the bytes all transfers not yet deleted or purged may hold
        /// together (stored, released and quarantined, each transfer counted whole); an upload beyond it gets 507.
        public var maxStoredBytes: Int64? = nil
    }

    /// `policy`: type rules applied after detection.
    public struct Policy: Sendable, Equatable, Codable {
        /// `policy.blockedTypes`: detected MIME types (or `family/*`) that are blocked.
        public var blockedTypes: [String]
        /// `policy.allowedTypes`: when not empty, only these detected types pass.
        public var allowedTypes: [String]
        /// `policy.blockOnTypeMismatch`: block harmless declared types whose bytes are executable, script, archive or macro document.
        public var blockOnTypeMismatch: Bool
        /// `policy.opaqueContent`: serve or quarantine uploads whose content cannot be inspected (encrypted).
        public var opaqueContent: OpaqueContent = .serve
    }

    /// `tokens`: download token keys.
    public struct Tokens: Sendable, Equatable {
        /// `tokens.activeKeyId`: the key that signs new tokens.
        public var activeKeyId: String
        /// `tokens.keys`: key id → base64 key (at least 32 bytes); retired keys still verify until removed.
        public var keys: [String: Data]
        /// `tokens.ttlSeconds`: default token lifetime.
        public var ttlSeconds: Int
        /// `tokens.singleUse`: a token downloads once.
        public var singleUse: Bool
    }

    /// `servers.<name>`: one IM server.
    public struct Server: Sendable, Equatable {
        /// `servers.<name>.apiKey` (or `apiKeyFile`) and `servers.<name>.apiKeys` (a list, for rotation): the
        /// bearer keys it authenticates with. Optional with mutual TLS, where the certificate names the server.
        public var apiKeys: [String]
        /// `servers.<name>.certificateNames`: the DNS names (subjectAltName, else the subject CN) this server's
        /// client certificate may carry; required for every server with `http.tls.clientCAFile`.
        public var certificateNames: [String]

        /// Creates a server entry.
        public init(apiKeys: [String], certificateNames: [String] = []) {
            self.apiKeys = apiKeys
            self.certificateNames = certificateNames
        }

        /// Creates a server entry with one API key.
        public init(apiKey: String) {
            self.init(apiKeys: [apiKey])
        }
    }

    /// `metrics`: the Prometheus endpoint.
    public struct Metrics: Sendable, Equatable {
        /// `metrics.bearerToken` (or `bearerTokenFile`; optional): with it, `GET /metrics` needs
        /// `Authorization: Bearer <token>`, as Prometheus' `authorization` block sends.
        public var bearerToken: String?
    }

    /// `xep0363`: external HTTP upload for Prosody and ejabberd.
    public struct XEP0363: Sendable, Equatable {
        /// `xep0363.enabled` (default false).
        public var enabled: Bool
        /// `xep0363.secret` (or `secretFile`; required when enabled): the HMAC/JWT secret shared with the XMPP
        /// server. Empty while disabled.
        public var secret: String
        /// `xep0363.pathPrefix` (default `/upload/`).
        public var pathPrefix: String
    }

    /// `retention`: days bytes are kept before `airlock purge` removes them.
    public struct Retention: Sendable, Equatable {
        /// `retention.cleanDays`.
        public var cleanDays: Int
        /// `retention.quarantineDays`.
        public var quarantineDays: Int
    }
}

extension AirlockConfiguration {
    /// Development secrets shipped in `Config/airlock.json`. The built-in defaults hold none of them; a configuration
    /// that uses one is accepted only while `http.host` is a loopback address (``developmentSecretKeys``).
    public enum DevelopmentSecrets {
        /// The shipped `storage.quarantineKey`.
        public static let quarantineKey = "A/5gPtAAkrFgfwOJCzdap7K8hIDTce+ioiPctUX2UDA="
        /// The shipped `tokens.keys.dev`.
        public static let tokenKey = "Ki4PCKvvm45T9sDM2Exadt12mGaHNM9DXYfk6zZxsjc="
        /// The shipped `servers.dev.apiKey`.
        public static let apiKey = "dev-api-key-change-me"
        /// The shipped `xep0363.secret`.
        public static let xep0363Secret = "dev-xep0363-secret-change-me-0123456789"
    }

    /// What the shipped `Config/airlock.json` holds: the built-in defaults plus the development secrets and
    /// XEP-0363 on, served on 127.0.0.1 only. For tests and benchmarks; never for a non-loopback listener.
    public static var development: AirlockConfiguration {
        let file: [String: JSONValue] = [
            "storage": .object(["quarantineKey": .string(DevelopmentSecrets.quarantineKey)]),
            "tokens": .object(["activeKeyId": .string("dev"), "keys": .object(["dev": .string(DevelopmentSecrets.tokenKey)])]),
            "servers": .object(["dev": .object(["apiKey": .string(DevelopmentSecrets.apiKey)])]),
            "xep0363": .object(["enabled": .bool(true), "secret": .string(DevelopmentSecrets.xep0363Secret)]),
        ]
        // `try!` is safe: the built-in defaults plus these four valid secrets on the default loopback host load
        // (the configuration tests check that they equal the shipped, valid Config/airlock.json).
        // swift-format-ignore: NeverUseForceTry
        return try! AirlockConfiguration(file: file, fileName: "development defaults", environment: [:])
    }

    /// Loads the configuration: `file` if given (it must exist), else `Config/airlock.json` if present, else the
    /// built-in defaults (which hold no secrets, so the environment must give them); then environment overrides.
    ///
    /// - Throws: ``ConfigurationError`` naming the key (or the file) at fault.
    public static func load(
        file: String? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> AirlockConfiguration {
        let path = file ?? (FileManager.default.fileExists(atPath: Self.defaultFile) ? Self.defaultFile : nil)
        guard let path else {
            return try AirlockConfiguration(file: [:], fileName: "defaults", environment: environment)
        }
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw ConfigurationError(key: nil, message: "cannot read the configuration file \(path): it does not exist or is not readable")
        }
        return try Self.parse(data, fileName: path, environment: environment)
    }

    /// Reads the configuration from the JSON text of a file named `fileName`, then environment overrides.
    ///
    /// - Throws: ``ConfigurationError`` naming the key at fault, or none when the text is not a JSON object.
    public static func parse(_ data: Data, fileName: String, environment: [String: String]) throws -> AirlockConfiguration {
        let root: JSONValue
        do {
            root = try JSONValue.parse(data)
        } catch {
            throw ConfigurationError(key: nil, message: "\(fileName) is not valid JSON: \(error); fix the file or pass another with --config")
        }
        guard case .object(let object) = root else {
            throw ConfigurationError(key: nil, message: "\(fileName) must hold a JSON object, found \(root.kindName)")
        }
        return try AirlockConfiguration(file: object, fileName: fileName, environment: environment)
    }

    init(file: [String: JSONValue], fileName: String, environment: [String: String]) throws {
        var reader = ConfigurationReader(file: file, fileName: fileName, environment: environment)
        self.http = try HTTP(&reader)
        self.storage = try Storage(&reader)
        self.scanner = try Scanner(&reader)
        self.limits = Limits(maxUploadBytes: try reader.int("limits.maxUploadBytes", default: 100 << 20, in: 1...Int(Int64.max / 2)))
        self.limits.maxStoredBytes = try reader.optionalInt("limits.maxStoredBytes", in: 0...Int(Int64.max / 2)).map(Int64.init)
        self.quotas = try Quotas(&reader)
        self.policy = try Policy(&reader)
        self.tokens = try Tokens(&reader)
        self.servers = try Self.readServers(&reader, mutualTLS: self.http.tls.clientCAFile != nil)
        self.xep0363 = try XEP0363(&reader)
        self.retention = Retention(
            cleanDays: try reader.int("retention.cleanDays", default: 30, in: 1...36500),
            quarantineDays: try reader.int("retention.quarantineDays", default: 90, in: 1...36500)
        )
        self.metrics = Metrics(bearerToken: try reader.optionalSecret("metrics.bearerToken"))
        self.ledger = try LedgerSettings(&reader)
        self.node = try Node(&reader)
        self.retroscan = Retroscan(
            windowHours: try reader.int("retroscan.windowHours", default: 168, in: 0...87_600),
            workers: try reader.int("retroscan.workers", default: 1, in: 1...64)
        )
        self.notifications = try Notifications(&reader)

        let unknown = reader.unknownFileKeys()
        if let first = unknown.first {
            throw ConfigurationError(key: first, message: "unknown key in \(fileName); check its spelling against Config/airlock.json")
        }
        try self.validate()
    }

    private func validate() throws {
        guard let url = URL(string: self.http.publicBaseURL), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil
        else {
            throw ConfigurationError(key: "http.publicBaseURL", message: "must be an http:// or https:// URL, got \"\(self.http.publicBaseURL)\"")
        }
        if let token = self.metrics.bearerToken, token.utf8.count < 16 {
            throw ConfigurationError(key: "metrics.bearerToken", message: "must be at least 16 characters; generate one with `openssl rand -hex 32`")
        }
        let development = self.developmentSecretKeys
        if !development.isEmpty, !Self.isLoopback(self.http.host) {
            throw ConfigurationError(
                key: development[0],
                message: """
                    holds a development secret shipped with Airlock, and http.host \(self.http.host) is not a loopback \
                    address. Replace every one of these before serving beyond this machine: \
                    \(development.joined(separator: ", ")) (generate keys with `openssl rand -base64 32`)
                    """
            )
        }
    }

    /// The keys whose secret equals one shipped in `Config/airlock.json` (``DevelopmentSecrets``), sorted.
    public var developmentSecretKeys: [String] {
        typealias Secrets = DevelopmentSecrets
        var inUse: [String] = []
        for (id, key) in self.storage.quarantineKeys where key == Data(base64Encoded: Secrets.quarantineKey) {
            inUse.append(id == Storage.singleKeyId ? "storage.quarantineKey" : "storage.quarantineKeys.\(id)")
        }
        for (id, key) in self.tokens.keys where key == Data(base64Encoded: Secrets.tokenKey) {
            inUse.append("tokens.keys.\(id)")
        }
        for (name, server) in self.servers where server.apiKeys.contains(Secrets.apiKey) {
            inUse.append("servers.\(name).apiKey")
        }
        if self.xep0363.enabled, self.xep0363.secret == Secrets.xep0363Secret {
            inUse.append("xep0363.secret")
        }
        return inUse.sorted()
    }

    /// Whether `host` only listens on this machine: `localhost`, 127.0.0.0/8 or `::1`.
    public static func isLoopback(_ host: String) -> Bool {
        var address = host.lowercased()
        if address.hasPrefix("["), address.hasSuffix("]") {
            address = String(address.dropFirst().dropLast())
        }
        if address == "localhost" || address == "::1" || address == "0:0:0:0:0:0:0:1" {
            return true
        }
        let octets = address.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }

    private static func readServers(_ reader: inout ConfigurationReader, mutualTLS: Bool) throws -> [String: Server] {
        guard let names = try reader.mapEntries("servers"), !names.isEmpty else {
            throw ConfigurationError(
                key: "servers",
                message: "is missing: name at least one IM server, e.g. {\"prosody\": {\"apiKey\": \"…\"}} (`openssl rand -hex 32`)"
            )
        }
        var servers: [String: Server] = [:]
        var owners: [String: String] = [:]
        var certificateOwners: [String: String] = [:]
        for name in names {
            // XEP-0363 uploads are recorded under the server name "xep0363": an API client of that name would
            // see and delete them all.
            guard name != "xep0363" else {
                throw ConfigurationError(key: "servers.xep0363", message: "the name xep0363 is reserved for XEP-0363 uploads; choose another")
            }
            var keys = try reader.strings("servers.\(name).apiKeys", default: [])
            if let key = try reader.optionalSecret("servers.\(name).apiKey") {
                keys.insert(key, at: 0)
            }
            for key in keys where key.utf8.count < 16 {
                throw ConfigurationError(key: "servers.\(name).apiKey", message: "must be at least 16 characters; generate one with `openssl rand -hex 32`")
            }
            for key in keys {
                if let owner = owners[key], owner != name {
                    throw ConfigurationError(
                        key: "servers.\(name).apiKey",
                        message: "servers \(owner) and \(name) have the same API key; give each IM server its own (`openssl rand -hex 32`)"
                    )
                }
                owners[key] = name
            }
            let certificateNames = try reader.strings("servers.\(name).certificateNames", default: []).map { $0.lowercased() }
            for certificateName in certificateNames {
                if let owner = certificateOwners[certificateName], owner != name {
                    throw ConfigurationError(
                        key: "servers.\(name).certificateNames",
                        message: "servers \(owner) and \(name) both claim the certificate name \(certificateName); a certificate must name one server"
                    )
                }
                certificateOwners[certificateName] = name
            }
            if mutualTLS, certificateNames.isEmpty {
                throw ConfigurationError(
                    key: "servers.\(name).certificateNames",
                    message: "is required with http.tls.clientCAFile: list the DNS names in this IM server's client certificate"
                )
            }
            if !mutualTLS, keys.isEmpty {
                throw ConfigurationError(key: "servers.\(name).apiKey", message: "is missing; generate one with `openssl rand -hex 32`")
            }
            servers[name] = Server(apiKeys: keys, certificateNames: certificateNames)
        }
        return servers
    }
}

extension AirlockConfiguration.HTTP {
    fileprivate init(_ reader: inout ConfigurationReader) throws {
        self.port = try reader.int("http.port", default: 8080, in: 0...65535)
        self.host = try reader.string("http.host", default: "127.0.0.1")
        self.publicBaseURL = try reader.string("http.publicBaseURL", default: "http://127.0.0.1:8080")
        self.tls = AirlockConfiguration.TLS(
            certificateFile: try reader.optionalString("http.tls.certificateFile"),
            privateKeyFile: try reader.optionalString("http.tls.privateKeyFile"),
            clientCAFile: try reader.optionalString("http.tls.clientCAFile")
        )
        self.idleTimeoutSeconds = try reader.int("http.idleTimeoutSeconds", default: 30, in: 1...86400)
        self.maxConnections = try reader.int("http.maxConnections", default: 1024, in: 1...1_000_000)
        self.minimumUploadBytesPerSecond = try reader.int("http.minimumUploadBytesPerSecond", default: 1024, in: 0...Int(Int32.max))
        self.cors = try AirlockConfiguration.CORS(&reader)
        guard !self.host.isEmpty else {
            throw ConfigurationError(key: "http.host", message: "must not be empty")
        }
        guard (self.tls.certificateFile == nil) == (self.tls.privateKeyFile == nil) else {
            throw ConfigurationError(key: "http.tls", message: "certificateFile and privateKeyFile must be given together")
        }
        if self.tls.clientCAFile != nil, self.tls.certificateFile == nil {
            throw ConfigurationError(
                key: "http.tls.clientCAFile",
                message: "needs http.tls.certificateFile and privateKeyFile: mutual TLS runs over HTTPS"
            )
        }
    }
}

extension AirlockConfiguration.Storage {
    fileprivate init(_ reader: inout ConfigurationReader) throws {
        self.dataDirectory = try reader.string("storage.dataDirectory", default: "var")
        self.quarantineDirectory = try reader.string("storage.quarantineDirectory", default: "Quarantine")
        var keys: [String: Data] = [:]
        for (id, secret) in try reader.secretMap("storage.quarantineKeys") ?? [:] {
            keys[id] = try AirlockConfiguration.key("storage.quarantineKeys.\(id)", secret, exactly: 32)
        }
        if let single = try reader.optionalSecret("storage.quarantineKey") {
            guard keys[Self.singleKeyId] == nil else {
                throw ConfigurationError(
                    key: "storage.quarantineKey",
                    message: "is the key id \(Self.singleKeyId), which storage.quarantineKeys names too; keep one"
                )
            }
            keys[Self.singleKeyId] = try AirlockConfiguration.key("storage.quarantineKey", single, exactly: 32)
        }
        guard !keys.isEmpty else {
            throw ConfigurationError(
                key: "storage.quarantineKey",
                message: "is missing: give storage.quarantineKey (or storage.quarantineKeys), base64 of 32 bytes (`openssl rand -base64 32`)"
            )
        }
        self.quarantineKeys = keys
        let active = try reader.optionalString("storage.activeQuarantineKeyId")
        if let active {
            guard keys[active] != nil else {
                throw ConfigurationError(
                    key: "storage.activeQuarantineKeyId",
                    message: "names key \"\(active)\", which is not configured (\(keys.keys.sorted().joined(separator: ", ")))"
                )
            }
            self.activeQuarantineKeyId = active
        } else if keys.count == 1, let only = keys.keys.first {
            self.activeQuarantineKeyId = only
        } else {
            throw ConfigurationError(
                key: "storage.activeQuarantineKeyId",
                message: "is missing: with several quarantine keys, name the one that encrypts new files"
            )
        }
    }
}

extension AirlockConfiguration.Scanner {
    fileprivate init(_ reader: inout ConfigurationReader) throws {
        self.signatureDirectories = try reader.strings("scanner.signatureDirectories", default: ["/var/lib/clamav", "Config/signatures"])
        // libclamav cannot scan files of 2 GiB or more (it flags them as over the limit whatever the setting).
        self.maxFileSize = try reader.int("scanner.maxFileSize", default: 100 << 20, in: 1...Int(Int32.max))
        self.maxScanSize = try reader.int("scanner.maxScanSize", default: 400 << 20, in: 1...Int(Int64.max / 2))
        self.maxRecursion = try reader.int("scanner.maxRecursion", default: 16, in: 1...64)
        self.maxFiles = try reader.int("scanner.maxFiles", default: 10_000, in: 1...Int(Int32.max))
        self.scanTimeoutSeconds = try reader.int("scanner.scanTimeoutSeconds", default: 120, in: 1...(Int(Int32.max) / 1000))
        self.workers = try reader.int("scanner.workers", default: 0, in: 0...1024)
        self.processes = try reader.int("scanner.processes", default: 1, in: 1...64)
        self.reloadCheckSeconds = try reader.int("scanner.reloadCheckSeconds", default: 60, in: 0...86_400)
        let mode = try reader.string("scanner.reloadMode", default: "concurrent")
        guard let reloadMode = ReloadMode(rawValue: mode) else {
            throw ConfigurationError(
                key: "scanner.reloadMode",
                message: "must be \"concurrent\" (memory for two engines while reloading) or \"blocking\" (memory for one), got \"\(mode)\""
            )
        }
        self.reloadMode = reloadMode
        self.isolation = Isolation(
            enabled: try reader.bool("scanner.isolation.enabled", default: true),
            user: try reader.string("scanner.isolation.user", default: "nobody"),
            // An engine with the official database takes about 1 GiB; threads reserve address space beyond that.
            memoryLimitBytes: try reader.int("scanner.isolation.memoryLimitBytes", default: 8 << 30, in: 0...Int(Int64.max / 2))
        )
        guard !self.isolation.user.isEmpty else {
            throw ConfigurationError(key: "scanner.isolation.user", message: "must name a user (the default is nobody)")
        }
        guard self.isolation.memoryLimitBytes == 0 || self.isolation.memoryLimitBytes >= 256 << 20 else {
            throw ConfigurationError(
                key: "scanner.isolation.memoryLimitBytes",
                message: "is \(self.isolation.memoryLimitBytes): at least 268435456 (256 MiB) is needed to load signatures, or 0 for no limit"
            )
        }
        guard !self.signatureDirectories.isEmpty else {
            throw ConfigurationError(key: "scanner.signatureDirectories", message: "must name at least one directory")
        }
        // libclamav counts the rescans of embedded content toward the scan size: with equal limits, random files
        // near maxFileSize (what encrypted uploads look like) came out Heuristics.Limits.Exceeded.MaxScanSize.
        guard self.maxScanSize / 2 >= self.maxFileSize else {
            throw ConfigurationError(
                key: "scanner.maxScanSize",
                message: """
                    must be at least twice scanner.maxFileSize (\(self.maxFileSize)), got \(self.maxScanSize): libclamav counts \
                    rescans of embedded content toward it, so files near maxFileSize would come out unscannable. \
                    Set it to 4 × maxFileSize (\(self.maxFileSize * 4)), as the shipped configuration does
                    """
            )
        }
    }
}

extension AirlockConfiguration.Policy {
    fileprivate init(_ reader: inout ConfigurationReader) throws {
        self.blockedTypes = try reader.strings(
            "policy.blockedTypes",
            default: [
                "application/vnd.microsoft.portable-executable", "application/x-executable",
                "application/x-sharedlib", "application/x-mach-binary",
            ]
        )
        self.allowedTypes = try reader.strings("policy.allowedTypes", default: [])
        self.blockOnTypeMismatch = try reader.bool("policy.blockOnTypeMismatch", default: true)
        self.opaqueContent = try OpaqueContent(&reader)
    }
}

extension AirlockConfiguration.Tokens {
    fileprivate init(_ reader: inout ConfigurationReader) throws {
        guard let secrets = try reader.secretMap("tokens.keys"), !secrets.isEmpty else {
            throw ConfigurationError(
                key: "tokens.keys",
                message: "is missing: give at least one download token key, e.g. {\"k1\": \"…\"} (`openssl rand -base64 32`), and tokens.activeKeyId"
            )
        }
        var keys: [String: Data] = [:]
        for (id, secret) in secrets {
            keys[id] = try AirlockConfiguration.key("tokens.keys.\(id)", secret, atLeast: 32)
        }
        let ids = keys.keys.sorted()
        let active: String
        if let named = try reader.optionalString("tokens.activeKeyId") {
            active = named
        } else if ids.count == 1 {
            active = ids[0]
        } else {
            throw ConfigurationError(key: "tokens.activeKeyId", message: "is missing: with several token keys, name the one that signs new tokens")
        }
        guard keys[active] != nil else {
            throw ConfigurationError(
                key: "tokens.activeKeyId",
                message: "names key \"\(active)\", which is not in tokens.keys (\(ids.joined(separator: ", ")))"
            )
        }
        self.activeKeyId = active
        self.keys = keys
        self.ttlSeconds = try reader.int("tokens.ttlSeconds", default: 900, in: 1...(366 * 86400))
        self.singleUse = try reader.bool("tokens.singleUse", default: false)
    }
}

extension AirlockConfiguration.XEP0363 {
    fileprivate init(_ reader: inout ConfigurationReader) throws {
        self.pathPrefix = try reader.string("xep0363.pathPrefix", default: "/upload/")
        guard self.pathPrefix.hasPrefix("/"), self.pathPrefix.hasSuffix("/"), self.pathPrefix.count > 1 else {
            throw ConfigurationError(
                key: "xep0363.pathPrefix",
                message: "must start and end with \"/\" and not be \"/\" alone, got \"\(self.pathPrefix)\""
            )
        }
        self.enabled = try reader.bool("xep0363.enabled", default: false)
        let secret = try reader.optionalSecret("xep0363.secret")
        guard self.enabled else {
            self.secret = ""
            return
        }
        // HS256 keys shorter than the hash are weak, and JWTKit refuses them.
        guard let secret, secret.utf8.count >= 32 else {
            throw ConfigurationError(
                key: "xep0363.secret",
                message: """
                    \(secret == nil ? "is missing" : "must be at least 32 characters") while xep0363.enabled is true; \
                    generate one with `openssl rand -hex 32` and give the same to the XMPP server
                    """
            )
        }
        self.secret = secret
    }
}

extension AirlockConfiguration {
    fileprivate static func key(_ name: String, _ base64: String, exactly count: Int) throws -> Data {
        guard let data = Data(base64Encoded: base64), data.count == count else {
            throw ConfigurationError(
                key: name,
                message: "must be base64 of exactly \(count) bytes; generate one with `openssl rand -base64 \(count)`"
            )
        }
        return data
    }

    fileprivate static func key(_ name: String, _ base64: String, atLeast count: Int) throws -> Data {
        guard let data = Data(base64Encoded: base64), data.count >= count else {
            throw ConfigurationError(
                key: name,
                message: "must be base64 of at least \(count) bytes; generate one with `openssl rand -base64 \(count)`"
            )
        }
        return data
    }
}

extension AirlockConfiguration.Node {
    fileprivate init(_ reader: inout ConfigurationReader) throws {
        let id = try reader.string("node.id", default: ProcessInfo.processInfo.hostName)
        let allowed = id.utf8.allSatisfy { $0 == 45 || $0 == 46 || $0 == 95 || (48...57).contains($0) || (65...90).contains($0) || (97...122).contains($0) }
        guard !id.isEmpty, id.utf8.count <= 64, allowed else {
            throw ConfigurationError(key: "node.id", message: "must be 1 to 64 letters, digits, '.', '-' or '_', got \"\(id)\"")
        }
        self.id = id
    }
}

extension AirlockConfiguration.LedgerSettings {
    fileprivate init(_ reader: inout ConfigurationReader) throws {
        self.groupCommitMicroseconds = try reader.int("ledger.groupCommitMicroseconds", default: 2000, in: 0...1_000_000)
        switch try reader.string("ledger.backend", default: "sqlite") {
        case "sqlite":
            self.backend = .sqlite
        case "postgresql":
            self.backend = .postgresql(try AirlockConfiguration.PostgreSQL(&reader))
        case let other:
            throw ConfigurationError(key: "ledger.backend", message: "must be \"sqlite\" or \"postgresql\", got \"\(other)\"")
        }
    }
}

extension AirlockConfiguration.PostgreSQL {
    fileprivate init(_ reader: inout ConfigurationReader) throws {
        let url = try reader.requiredSecret(
            "ledger.postgresql.url",
            advice: "give the PostgreSQL ledger as postgres://user@host:5432/airlock?sslmode=verify-full"
        )
        let passwordFile = try reader.optionalString("ledger.postgresql.passwordFile")
        self = try Self.parse(url)
        if let passwordFile {
            do {
                self.password = try String(contentsOfFile: passwordFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            } catch {
                throw ConfigurationError(key: "ledger.postgresql.passwordFile", message: "cannot read \(passwordFile): \(error.localizedDescription)")
            }
        }
        self.poolSize = try reader.int("ledger.postgresql.poolSize", default: 10, in: 1...1000)
    }

    /// Reads libpq's URL form: `postgres://user[:password]@host[:port]/database?sslmode=…`, or a Unix socket as
    /// `postgres://user@/database?host=/run/postgresql` (the password never appears in an error).
    public static func parse(_ url: String) throws -> Self {
        func invalid(_ why: String) -> ConfigurationError {
            ConfigurationError(key: "ledger.postgresql.url", message: "\(why); write it as postgres://user@host:5432/airlock?sslmode=verify-full")
        }
        guard let components = URLComponents(string: url), let scheme = components.scheme, ["postgres", "postgresql"].contains(scheme) else {
            throw invalid("is not a postgres:// URL")
        }
        guard let user = components.user, !user.isEmpty else { throw invalid("names no user") }
        let query = Dictionary((components.queryItems ?? []).map { ($0.name, $0.value ?? "") }, uniquingKeysWith: { $1 })
        for name in query.keys where !["sslmode", "host"].contains(name) {
            throw invalid("has the parameter \(name), which Airlock does not support (only sslmode and host)")
        }
        let socketDirectory = query["host"].flatMap { $0.hasPrefix("/") ? $0 : nil }
        let host = components.host.flatMap { $0.isEmpty ? nil : $0 } ?? query["host"].flatMap { $0.hasPrefix("/") ? nil : $0 }
        guard host != nil || socketDirectory != nil else { throw invalid("names no host and no Unix socket directory (?host=/path)") }
        let database = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        let modeText = query["sslmode"] ?? SSLMode.verifyFull.rawValue
        guard let sslMode = SSLMode(rawValue: modeText) else {
            throw invalid("has sslmode=\(modeText); use disable, require or verify-full")
        }
        return Self(
            host: host,
            socketDirectory: socketDirectory,
            port: components.port ?? 5432,
            username: user,
            password: components.password,
            database: database.isEmpty ? user : database,
            sslMode: sslMode,
            poolSize: 10
        )
    }
}
