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

    /// `storage`: directories and the quarantine encryption key.
    public struct Storage: Sendable, Equatable {
        /// `storage.dataDirectory` (default `var`): ledger, staging and clean files.
        public var dataDirectory: String
        /// `storage.quarantineDirectory` (default `Quarantine`): encrypted quarantined files.
        public var quarantineDirectory: String
        /// `storage.quarantineKey` (base64, 32 bytes; or `quarantineKeyFile`): AES-GCM key for quarantined bytes.
        public var quarantineKey: Data
    }

    /// `scanner`: signatures and limits.
    public struct Scanner: Sendable, Equatable {
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

        /// The number of scan threads to run: `workers`, or one per core when 0.
        public var effectiveWorkers: Int {
            self.workers > 0 ? self.workers : ProcessInfo.processInfo.activeProcessorCount
        }
    }

    /// `limits`: request limits.
    public struct Limits: Sendable, Equatable {
        /// `limits.maxUploadBytes`: larger uploads are refused with 413.
        public var maxUploadBytes: Int
    }

    /// `policy`: type rules applied after detection.
    public struct Policy: Sendable, Equatable {
        /// `policy.blockedTypes`: detected MIME types (or `family/*`) that are blocked.
        public var blockedTypes: [String]
        /// `policy.allowedTypes`: when not empty, only these detected types pass.
        public var allowedTypes: [String]
        /// `policy.blockOnTypeMismatch`: block harmless declared types whose bytes are executable, script, archive or macro document.
        public var blockOnTypeMismatch: Bool
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
        /// `servers.<name>.apiKey` (or `apiKeyFile`): the bearer key it authenticates with.
        public var apiKey: String

        /// Creates a server entry.
        public init(apiKey: String) {
            self.apiKey = apiKey
        }
    }

    /// `xep0363`: external HTTP upload for Prosody and ejabberd.
    public struct XEP0363: Sendable, Equatable {
        /// `xep0363.enabled`.
        public var enabled: Bool
        /// `xep0363.secret` (or `secretFile`): the HMAC/JWT secret shared with the XMPP server.
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
    /// Development secrets shipped in the defaults; the server warns when any is in use.
    public enum DevelopmentSecrets {
        /// The default `storage.quarantineKey`.
        public static let quarantineKey = "A/5gPtAAkrFgfwOJCzdap7K8hIDTce+ioiPctUX2UDA="
        /// The default `tokens.keys.dev`.
        public static let tokenKey = "Ki4PCKvvm45T9sDM2Exadt12mGaHNM9DXYfk6zZxsjc="
        /// The default `servers.dev.apiKey`.
        public static let apiKey = "dev-api-key-change-me"
        /// The default `xep0363.secret`.
        public static let xep0363Secret = "dev-xep0363-secret-change-me-0123456789"
    }

    /// The built-in defaults, identical to the shipped `Config/airlock.json`.
    public static var defaults: AirlockConfiguration {
        // `try!` is safe: an empty file and environment read nothing but the compiled-in defaults, which are valid
        // (the configuration tests check that they equal the shipped, valid Config/airlock.json).
        // swift-format-ignore: NeverUseForceTry
        try! AirlockConfiguration(file: [:], fileName: "defaults", environment: [:])
    }

    /// Loads the configuration: `file` if given (it must exist), else `Config/airlock.json` if present, else the
    /// defaults; then environment overrides.
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
        let megabyte = 1 << 20
        let largest = Int(Int32.max)

        let port = try reader.int("http.port", default: 8080, in: 0...65535)
        let host = try reader.string("http.host", default: "127.0.0.1")
        self.http = HTTP(
            host: host,
            port: port,
            publicBaseURL: try reader.string("http.publicBaseURL", default: "http://127.0.0.1:8080"),
            tls: TLS(
                certificateFile: try reader.optionalString("http.tls.certificateFile"),
                privateKeyFile: try reader.optionalString("http.tls.privateKeyFile"),
                clientCAFile: try reader.optionalString("http.tls.clientCAFile")
            ),
            idleTimeoutSeconds: try reader.int("http.idleTimeoutSeconds", default: 30, in: 1...86400),
            maxConnections: try reader.int("http.maxConnections", default: 1024, in: 1...1_000_000),
            minimumUploadBytesPerSecond: try reader.int("http.minimumUploadBytesPerSecond", default: 1024, in: 0...largest)
        )
        self.storage = Storage(
            dataDirectory: try reader.string("storage.dataDirectory", default: "var"),
            quarantineDirectory: try reader.string("storage.quarantineDirectory", default: "Quarantine"),
            quarantineKey: try Self.key(
                "storage.quarantineKey",
                try reader.secret("storage.quarantineKey", default: DevelopmentSecrets.quarantineKey),
                exactly: 32
            )
        )
        self.scanner = Scanner(
            signatureDirectories: try reader.strings(
                "scanner.signatureDirectories",
                default: ["/var/lib/clamav", "Config/signatures"]
            ),
            // libclamav cannot scan files of 2 GiB or more (it flags them as over the limit whatever the setting).
            maxFileSize: try reader.int("scanner.maxFileSize", default: 100 * megabyte, in: 1...Int(Int32.max)),
            maxScanSize: try reader.int("scanner.maxScanSize", default: 400 * megabyte, in: 1...Int(Int64.max / 2)),
            maxRecursion: try reader.int("scanner.maxRecursion", default: 16, in: 1...64),
            maxFiles: try reader.int("scanner.maxFiles", default: 10_000, in: 1...largest),
            scanTimeoutSeconds: try reader.int("scanner.scanTimeoutSeconds", default: 120, in: 1...(largest / 1000)),
            workers: try reader.int("scanner.workers", default: 0, in: 0...1024)
        )
        self.limits = Limits(
            maxUploadBytes: try reader.int("limits.maxUploadBytes", default: 100 * megabyte, in: 1...Int(Int64.max / 2))
        )
        self.policy = Policy(
            blockedTypes: try reader.strings(
                "policy.blockedTypes",
                default: [
                    "application/vnd.microsoft.portable-executable", "application/x-executable",
                    "application/x-sharedlib", "application/x-mach-binary",
                ]
            ),
            allowedTypes: try reader.strings("policy.allowedTypes", default: []),
            blockOnTypeMismatch: try reader.bool("policy.blockOnTypeMismatch", default: true)
        )

        var tokenKeys: [String: Data] = [:]
        let keyIds = try reader.mapEntries("tokens.keys") ?? ["dev"]
        for keyId in keyIds {
            let defaultKey = keyId == "dev" ? DevelopmentSecrets.tokenKey : ""
            tokenKeys[keyId] = try Self.key("tokens.keys.\(keyId)", try reader.secret("tokens.keys.\(keyId)", default: defaultKey), atLeast: 32)
        }
        let activeKeyId = try reader.string("tokens.activeKeyId", default: "dev")
        guard tokenKeys[activeKeyId] != nil else {
            throw ConfigurationError(
                key: "tokens.activeKeyId",
                message: "names key \"\(activeKeyId)\", which is not in tokens.keys (\(keyIds.joined(separator: ", ")))"
            )
        }
        self.tokens = Tokens(
            activeKeyId: activeKeyId,
            keys: tokenKeys,
            ttlSeconds: try reader.int("tokens.ttlSeconds", default: 900, in: 1...(366 * 86400)),
            singleUse: try reader.bool("tokens.singleUse", default: false)
        )

        var servers: [String: Server] = [:]
        for name in try reader.mapEntries("servers") ?? ["dev"] {
            // XEP-0363 uploads are recorded under the server name "xep0363": an API client of that name would
            // see and delete them all.
            guard name != "xep0363" else {
                throw ConfigurationError(key: "servers.xep0363", message: "the name xep0363 is reserved for XEP-0363 uploads; choose another")
            }
            let defaultKey = name == "dev" ? DevelopmentSecrets.apiKey : ""
            let apiKey = try reader.secret("servers.\(name).apiKey", default: defaultKey)
            guard apiKey.utf8.count >= 16 else {
                throw ConfigurationError(
                    key: "servers.\(name).apiKey",
                    message: "must be at least 16 characters; generate one with `openssl rand -hex 32`"
                )
            }
            servers[name] = Server(apiKey: apiKey)
        }
        self.servers = servers

        let pathPrefix = try reader.string("xep0363.pathPrefix", default: "/upload/")
        guard pathPrefix.hasPrefix("/"), pathPrefix.hasSuffix("/"), pathPrefix.count > 1 else {
            throw ConfigurationError(
                key: "xep0363.pathPrefix",
                message: "must start and end with \"/\" and not be \"/\" alone, got \"\(pathPrefix)\""
            )
        }
        self.xep0363 = XEP0363(
            enabled: try reader.bool("xep0363.enabled", default: true),
            secret: try reader.secret("xep0363.secret", default: DevelopmentSecrets.xep0363Secret),
            pathPrefix: pathPrefix
        )
        if self.xep0363.enabled, self.xep0363.secret.utf8.count < 32 {
            // HS256 keys shorter than the hash are weak, and JWTKit refuses them.
            throw ConfigurationError(
                key: "xep0363.secret",
                message: "must be at least 32 characters; generate one with `openssl rand -hex 32` and give the same to the XMPP server"
            )
        }
        self.retention = Retention(
            cleanDays: try reader.int("retention.cleanDays", default: 30, in: 1...36500),
            quarantineDays: try reader.int("retention.quarantineDays", default: 90, in: 1...36500)
        )

        let unknown = reader.unknownFileKeys()
        if let first = unknown.first {
            throw ConfigurationError(key: first, message: "unknown key in \(fileName); check its spelling against Config/airlock.json")
        }
        try self.validate()
    }

    private func validate() throws {
        guard !self.http.host.isEmpty else {
            throw ConfigurationError(key: "http.host", message: "must not be empty")
        }
        guard let url = URL(string: self.http.publicBaseURL), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil
        else {
            throw ConfigurationError(key: "http.publicBaseURL", message: "must be an http:// or https:// URL, got \"\(self.http.publicBaseURL)\"")
        }
        let tls = self.http.tls
        guard (tls.certificateFile == nil) == (tls.privateKeyFile == nil) else {
            throw ConfigurationError(key: "http.tls", message: "certificateFile and privateKeyFile must be given together")
        }
        if tls.clientCAFile != nil, tls.certificateFile == nil {
            throw ConfigurationError(
                key: "http.tls.clientCAFile",
                message: "needs http.tls.certificateFile and privateKeyFile: mutual TLS runs over HTTPS"
            )
        }
        guard !self.scanner.signatureDirectories.isEmpty else {
            throw ConfigurationError(key: "scanner.signatureDirectories", message: "must name at least one directory")
        }
        guard self.scanner.maxScanSize >= self.scanner.maxFileSize else {
            throw ConfigurationError(key: "scanner.maxScanSize", message: "must be at least scanner.maxFileSize (\(self.scanner.maxFileSize))")
        }
        guard !self.servers.isEmpty else {
            throw ConfigurationError(key: "servers", message: "must name at least one IM server with an apiKey")
        }
    }

    private static func key(_ name: String, _ base64: String, exactly count: Int) throws -> Data {
        guard let data = Data(base64Encoded: base64), data.count == count else {
            throw ConfigurationError(
                key: name,
                message: "must be base64 of exactly \(count) bytes; generate one with `openssl rand -base64 \(count)`"
            )
        }
        return data
    }

    private static func key(_ name: String, _ base64: String, atLeast count: Int) throws -> Data {
        guard let data = Data(base64Encoded: base64), data.count >= count else {
            throw ConfigurationError(
                key: name,
                message: "must be base64 of at least \(count) bytes; generate one with `openssl rand -base64 \(count)`"
            )
        }
        return data
    }
}
