import Foundation

/// Reads typed configuration values by dotted key path: environment first, then the JSON file, then the default.
///
/// Environment names are `AIRLOCK_` plus the key path, dots as `_`, camelCase split with `_`, upper case
/// (`http.port` → `AIRLOCK_HTTP_PORT`). A secret may instead be read from the file named by `<key>File`.
struct ConfigurationReader {
    private let file: [String: JSONValue]
    private let fileName: String
    private let environment: [String: String]
    /// Key paths read so far, to report keys in the file that nothing reads (typos).
    private(set) var consumed: Set<String> = []
    /// Maps given in the environment, which replace the file's map of the same key whole.
    private var replacedMaps: Set<String> = []

    init(file: [String: JSONValue], fileName: String, environment: [String: String]) {
        self.file = file
        self.fileName = fileName
        self.environment = environment
    }

    /// The environment variable that overrides `key`.
    static func environmentName(for key: String) -> String {
        var name = "AIRLOCK"
        for segment in key.split(separator: ".") {
            name += "_"
            var previous: Character?
            for character in segment {
                if let previous, character.isUppercase, previous.isLowercase || previous.isNumber {
                    name += "_"
                }
                name += character.uppercased()
                previous = character
            }
        }
        return name
    }

    // MARK: Typed accessors

    mutating func string(_ key: String, default defaultValue: String) throws -> String {
        try self.optionalString(key) ?? defaultValue
    }

    mutating func optionalString(_ key: String) throws -> String? {
        switch try self.raw(key) {
        case nil, .some((.null, _)):
            return nil
        case .some((.string(let value), _)):
            return value
        case .some((let other, let source)):
            throw self.wrongType(key, expected: "a string", got: other, source: source)
        }
    }

    /// A secret: the value itself, or the trimmed contents of the file named by `<key>File`; nil when neither is given.
    mutating func optionalSecret(_ key: String) throws -> String? {
        if let path = try self.optionalString(key + "File") {
            guard try self.optionalString(key) == nil else {
                throw ConfigurationError(key: key, message: "is given both as \(key) and as \(key)File; keep one")
            }
            do {
                return try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            } catch {
                throw ConfigurationError(key: key + "File", message: "cannot read the secret file \(path): \(error.localizedDescription)")
            }
        }
        return try self.optionalString(key)
    }

    /// A secret that must be configured: built-in defaults hold none.
    mutating func requiredSecret(_ key: String, advice: String) throws -> String {
        guard let secret = try self.optionalSecret(key) else {
            throw ConfigurationError(key: key, message: "is missing: \(advice)")
        }
        return secret
    }

    mutating func int(_ key: String, default defaultValue: Int, in range: ClosedRange<Int>) throws -> Int {
        let value: Int
        let source: String
        switch try self.raw(key) {
        case nil, .some((.null, _)):
            return defaultValue
        case .some((.number(let number), let from)):
            guard number.rounded() == number, let exact = Int(exactly: number) else {
                throw ConfigurationError(key: key, message: "must be a whole number, got \(number) (\(from))")
            }
            value = exact
            source = from
        case .some((.string(let text), let from)):
            guard let parsed = Int(text.trimmingCharacters(in: .whitespaces)) else {
                throw ConfigurationError(key: key, message: "must be a whole number, got \"\(text)\" (\(from))")
            }
            value = parsed
            source = from
        case .some((let other, let from)):
            throw self.wrongType(key, expected: "a whole number", got: other, source: from)
        }
        guard range.contains(value) else {
            throw ConfigurationError(
                key: key,
                message: "must be between \(range.lowerBound) and \(range.upperBound), got \(value) (\(source))"
            )
        }
        return value
    }

    mutating func bool(_ key: String, default defaultValue: Bool) throws -> Bool {
        switch try self.raw(key) {
        case nil, .some((.null, _)):
            return defaultValue
        case .some((.bool(let value), _)):
            return value
        case .some((.string(let text), let source)):
            switch text.lowercased() {
            case "true", "1", "yes": return true
            case "false", "0", "no": return false
            default:
                throw ConfigurationError(key: key, message: "must be true or false, got \"\(text)\" (\(source))")
            }
        case .some((let other, let source)):
            throw self.wrongType(key, expected: "true or false", got: other, source: source)
        }
    }

    /// An array of strings; from the environment either a JSON array or a comma-separated list.
    mutating func strings(_ key: String, default defaultValue: [String]) throws -> [String] {
        switch try self.raw(key) {
        case nil, .some((.null, _)):
            return defaultValue
        case .some((.array(let items), let source)):
            return try items.map { item in
                guard case .string(let text) = item else {
                    throw ConfigurationError(key: key, message: "must be an array of strings, found \(item.kindName) (\(source))")
                }
                return text
            }
        case .some((.string(let text), _)):
            return text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        case .some((let other, let source)):
            throw self.wrongType(key, expected: "an array of strings", got: other, source: source)
        }
    }

    /// An array of JSON objects (`notifications.webhooks`); from the environment, a JSON array. Nil when absent.
    mutating func objects(_ key: String) throws -> [[String: JSONValue]]? {
        switch try self.raw(key) {
        case nil, .some((.null, _)):
            return nil
        case .some((.array(let items), let source)):
            return try items.map { item in
                guard case .object(let object) = item else {
                    throw ConfigurationError(key: key, message: "must be an array of objects, found \(item.kindName) in it (\(source))")
                }
                return object
            }
        case .some((let other, let source)):
            throw self.wrongType(key, expected: "an array of objects", got: other, source: source)
        }
    }

    /// The entry names of a map-valued key (`servers`, `tokens.keys`, `storage.quarantineKeys`); nil when neither the
    /// environment nor the file has the key.
    ///
    /// A map given in the environment replaces the file's map whole: its entries are the only ones, and nothing
    /// under the key is read from the file any more (an operator who sets `AIRLOCK_SERVERS` for production must
    /// not keep the file's development server by accident).
    mutating func mapEntries(_ key: String) throws -> [String]? {
        self.consumed.insert(key)
        if let value = self.environmentValue(key) {
            guard case .object(let object) = value.value else {
                throw self.wrongType(key, expected: "a JSON object", got: value.value, source: value.source)
            }
            self.replacedMaps.insert(key)
            return object.keys.sorted()
        }
        if let value = self.fileValue(key) {
            guard case .object(let object) = value else {
                throw self.wrongType(key, expected: "an object", got: value, source: "in \(self.fileName)")
            }
            return object.keys.sorted()
        }
        return nil
    }

    /// A map of secrets (`tokens.keys`, `storage.quarantineKeys`): each entry `ID` holds its secret, or an entry
    /// `IDFile` names a file that holds it. Nil when the key is absent.
    mutating func secretMap(_ key: String) throws -> [String: String]? {
        guard let names = try self.mapEntries(key) else { return nil }
        var secrets: [String: String] = [:]
        for name in names {
            let id = name.hasSuffix("File") && name.count > 4 ? String(name.dropLast(4)) : name
            guard secrets[id] == nil else {
                throw ConfigurationError(key: "\(key).\(id)", message: "is given both as \(id) and as \(id)File; keep one")
            }
            guard let secret = try self.optionalSecret("\(key).\(id)") else {
                throw ConfigurationError(key: "\(key).\(name)", message: "must be a string")
            }
            secrets[id] = secret
        }
        return secrets
    }

    /// Key paths present in the file that were never read.
    func unknownFileKeys() -> [String] {
        var unknown: [String] = []
        func walk(_ object: [String: JSONValue], prefix: String) {
            for (name, value) in object {
                let path = prefix.isEmpty ? name : "\(prefix).\(name)"
                if self.consumed.contains(path) { continue }
                if case .object(let child) = value, self.consumed.contains(where: { $0.hasPrefix(path + ".") }) {
                    walk(child, prefix: path)
                } else {
                    unknown.append(path)
                }
            }
        }
        walk(self.file, prefix: "")
        return unknown.sorted()
    }

    // MARK: Lookup

    /// The raw value of `key` and a description of its source, environment before file.
    private mutating func raw(_ key: String) throws -> (JSONValue, String)? {
        self.consumed.insert(key)
        if let value = self.environmentValue(key) {
            return (value.value, value.source)
        }
        if let value = self.fileValue(key) {
            return (value, "in \(self.fileName)")
        }
        return nil
    }

    /// The value of `key` from its own variable, or from inside a JSON object given for one of its parents
    /// (`AIRLOCK_SERVERS='{"prosody": {"apiKey": "…"}}'` provides `servers.prosody.apiKey`).
    private func environmentValue(_ key: String) -> (value: JSONValue, source: String)? {
        let segments = key.split(separator: ".").map(String.init)
        for length in stride(from: segments.count, through: 1, by: -1) {
            let name = Self.environmentName(for: segments[..<length].joined(separator: "."))
            guard let text = self.environment[name] else { continue }
            let source = "from \(name)"
            let trimmed = text.trimmingCharacters(in: .whitespaces)
            var value: JSONValue = .string(text)
            if trimmed.hasPrefix("[") || trimmed.hasPrefix("{"), let parsed = try? JSONValue.parse(Data(trimmed.utf8)) {
                value = parsed
            }
            if length == segments.count {
                return (value, source)
            }
            if let nested = value.descend(into: segments[length...]) {
                return (nested, source)
            }
        }
        return nil
    }

    private func fileValue(_ key: String) -> JSONValue? {
        if self.replacedMaps.contains(where: { key == $0 || key.hasPrefix($0 + ".") }) {
            return nil
        }
        return JSONValue.object(self.file).descend(into: key.split(separator: ".").map(String.init)[...])
    }

    private func wrongType(_ key: String, expected: String, got value: JSONValue, source: String) -> ConfigurationError {
        ConfigurationError(key: key, message: "must be \(expected), found \(value.kindName) (\(source))")
    }
}

extension JSONValue {
    /// The value at the path of object keys below this one, if every step exists.
    fileprivate func descend(into path: ArraySlice<String>) -> JSONValue? {
        var current = self
        for segment in path {
            guard case .object(let object) = current, let next = object[segment] else { return nil }
            current = next
        }
        return current
    }
}
