// Fuzzes the configuration loader (DESIGN §4: an invalid value makes the process refuse to start with a message
// naming the key).
//
// Input: the JSON text of a configuration file, optionally preceded by environment variables:
//   ENV\n AIRLOCK_HTTP_PORT=8081\n … \n\n {json}
// The loader never crashes; it returns a configuration that satisfies every documented rule, or throws a
// ConfigurationError that names a key (only a file that is not a JSON object may go without one). Loading the
// same input twice gives the same answer.
import AirlockCore
import Foundation
import FuzzSupport

/// Every key path the loader reads, with the map-valued sections whose entry names are free.
let knownKeys: Set<String> = [
    "http", "http.host", "http.port", "http.publicBaseURL", "http.tls", "http.tls.certificateFile", "http.tls.privateKeyFile",
    "http.tls.clientCAFile", "storage", "storage.dataDirectory", "storage.quarantineDirectory", "storage.quarantineKey",
    "storage.quarantineKeyFile", "scanner", "scanner.signatureDirectories", "scanner.maxFileSize", "scanner.maxScanSize",
    "scanner.maxRecursion", "scanner.maxFiles", "scanner.scanTimeoutSeconds", "scanner.workers", "limits", "limits.maxUploadBytes",
    "policy", "policy.blockedTypes", "policy.allowedTypes", "policy.blockOnTypeMismatch", "tokens", "tokens.activeKeyId",
    "tokens.keys", "tokens.ttlSeconds", "tokens.singleUse", "servers", "xep0363", "xep0363.enabled", "xep0363.secret",
    "xep0363.secretFile", "xep0363.pathPrefix", "retention", "retention.cleanDays", "retention.quarantineDays",
]

/// Whether `key` is one the loader reads, or a path that exists in the file (an unknown key it reports).
func isNamable(_ key: String, in file: JSONValue?) -> Bool {
    if knownKeys.contains(key) || key.hasPrefix("servers.") || key.hasPrefix("tokens.keys.") {
        return true
    }
    var current = file
    for segment in key.split(separator: ".", omittingEmptySubsequences: false) {
        guard case .object(let object)? = current else { return false }
        current = object[String(segment)]
    }
    return current != nil
}

func checkValid(_ configuration: AirlockConfiguration) {
    let c = configuration
    invariant((0...65535).contains(c.http.port), "port \(c.http.port)")
    invariant(!c.http.host.isEmpty, "empty host")
    invariant(c.http.publicBaseURL.hasPrefix("http://") || c.http.publicBaseURL.hasPrefix("https://"), "publicBaseURL \(c.http.publicBaseURL)")
    invariant((c.http.tls.certificateFile == nil) == (c.http.tls.privateKeyFile == nil), "certificate without key")
    invariant(c.http.tls.clientCAFile == nil || c.http.tls.certificateFile != nil, "client CA without TLS")
    invariant(c.storage.quarantineKey.count == 32, "quarantine key of \(c.storage.quarantineKey.count) bytes")
    invariant(!c.scanner.signatureDirectories.isEmpty, "no signature directory")
    invariant(c.scanner.maxFileSize >= 1 && c.scanner.maxScanSize >= c.scanner.maxFileSize, "scan sizes")
    invariant((1...64).contains(c.scanner.maxRecursion), "maxRecursion \(c.scanner.maxRecursion)")
    invariant(c.scanner.maxFiles >= 1 && c.scanner.scanTimeoutSeconds >= 1 && (0...1024).contains(c.scanner.workers), "scanner limits")
    invariant(c.limits.maxUploadBytes >= 1, "maxUploadBytes \(c.limits.maxUploadBytes)")
    invariant(c.tokens.keys[c.tokens.activeKeyId] != nil, "active key \(c.tokens.activeKeyId) missing")
    invariant(c.tokens.keys.values.allSatisfy { $0.count >= 32 }, "a token key under 32 bytes")
    invariant((1...(366 * 86400)).contains(c.tokens.ttlSeconds), "ttlSeconds \(c.tokens.ttlSeconds)")
    invariant(!c.servers.isEmpty && c.servers.values.allSatisfy { $0.apiKey.utf8.count >= 16 }, "servers")
    let prefix = c.xep0363.pathPrefix
    invariant(prefix.hasPrefix("/") && prefix.hasSuffix("/") && prefix.count > 1, "pathPrefix \(prefix.debugDescription)")
    invariant(!c.xep0363.enabled || c.xep0363.secret.utf8.count >= 32, "short xep0363 secret")
    invariant((1...36500).contains(c.retention.cleanDays) && (1...36500).contains(c.retention.quarantineDays), "retention")
}

func load(_ json: Data, environment: [String: String]) -> Result<AirlockConfiguration, ConfigurationError> {
    do {
        return .success(try AirlockConfiguration.parse(json, fileName: "fuzz.json", environment: environment))
    } catch let error as ConfigurationError {
        return .failure(error)
    } catch {
        invariant(false, "threw \(type(of: error)), not a ConfigurationError: \(error)")
        return .failure(ConfigurationError(key: nil, message: ""))
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
    var input = FuzzInput(start, count)
    var environment: [String: String] = [:]
    if count >= 4, UnsafeBufferPointer(start: start, count: 4).elementsEqual("ENV\n".utf8) {
        _ = input.field()
        while case let line = input.field(), !line.isEmpty {
            let parts = text(line).split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if parts.count == 2 {
                environment[String(parts[0])] = String(parts[1])
            }
        }
    }
    let json = Data(input.rest())
    // Secrets may name files to read (`…File` keys, `…_FILE` variables): keep the fuzzer away from arbitrary paths
    // such as /dev/stdin, which would block it.
    if json.range(of: Data("File".utf8)) != nil || environment.contains(where: { $0.key.hasSuffix("_FILE") || $0.value.contains("File") }) {
        return 0
    }
    let file = try? JSONValue.parse(json)
    let first = load(json, environment: environment)
    switch first {
    case .success(let configuration):
        checkValid(configuration)
    case .failure(let error):
        if let key = error.key {
            invariant(isNamable(key, in: file), "the error names \(key.debugDescription), which is neither a known key nor in the file: \(error)")
        } else if case .object? = file {
            invariant(false, "a JSON object refused without naming a key: \(error)")
        }
        invariant(!error.message.isEmpty, "an error without a message")
    }
    invariant(load(json, environment: environment) == first, "loading the same input twice gave different answers")
    return 0
}
