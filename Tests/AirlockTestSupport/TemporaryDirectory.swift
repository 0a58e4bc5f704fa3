public import Foundation

/// A directory under the system temporary directory, removed when the value is released.
public final class TemporaryDirectory: Sendable {
    /// The directory's path.
    public let path: String

    /// Creates a fresh, empty directory.
    public init() throws {
        let path = NSTemporaryDirectory() + "airlock-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        self.path = path
    }

    deinit {
        try? FileManager.default.removeItem(atPath: self.path)
    }

    /// The path of `name` inside the directory.
    public func file(_ name: String) -> String {
        (self.path as NSString).appendingPathComponent(name)
    }

    /// Writes `data` to `name` (creating parent directories) and returns its path.
    @discardableResult
    public func write(_ name: String, _ data: Data) throws -> String {
        let path = self.file(name)
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent,
            withIntermediateDirectories: true
        )
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Writes `count` zero bytes to `name` in chunks and returns its path.
    @discardableResult
    public func writeZeros(_ name: String, count: Int) throws -> String {
        let path = self.file(name)
        _ = FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        let chunk = Data(count: 1 << 20)
        var remaining = count
        while remaining > 0 {
            let size = min(remaining, chunk.count)
            try handle.write(contentsOf: chunk.prefix(size))
            remaining -= size
        }
        return path
    }

    /// Creates `archive` with the `zip` command from `members` (relative to this directory); returns its path.
    @discardableResult
    public func zip(_ archive: String, members: [String], password: String? = nil) throws -> String {
        var arguments = ["-q", "-j"]
        if let password {
            arguments += ["-P", password]
        }
        arguments.append(self.file(archive))
        arguments += members.map { self.file($0) }
        let result = try ProcessRunner.runBlocking("/usr/bin/zip", arguments)
        guard result.status == 0 else {
            throw ProcessRunner.Failure(command: "zip", result: result)
        }
        return self.file(archive)
    }

    /// Creates a gzip-compressed tar `archive` of `members`; returns its path.
    @discardableResult
    public func tarGzip(_ archive: String, members: [String]) throws -> String {
        let result = try ProcessRunner.runBlocking("/bin/tar", ["-czf", self.file(archive), "-C", self.path] + members)
        guard result.status == 0 else {
            throw ProcessRunner.Failure(command: "tar", result: result)
        }
        return self.file(archive)
    }
}

extension TemporaryDirectory {
    /// Rewrites the uncompressed sizes a zip's local and central headers declare, as a hostile sender would,
    /// so they understate the real content.
    public func understateZipSizes(_ name: String, declaredSize: UInt32) throws {
        let url = URL(fileURLWithPath: self.file(name))
        var bytes = [UInt8](try Data(contentsOf: url))
        func put(_ value: UInt32, at offset: Int) {
            for index in 0..<4 { bytes[offset + index] = UInt8((value >> (8 * UInt32(index))) & 0xff) }
        }
        var index = 0
        while index + 4 <= bytes.count {
            if bytes[index] == 0x50, bytes[index + 1] == 0x4b {
                if bytes[index + 2] == 3, bytes[index + 3] == 4 {
                    put(declaredSize, at: index + 22)  // local header: uncompressed size
                } else if bytes[index + 2] == 1, bytes[index + 3] == 2 {
                    put(declaredSize, at: index + 24)  // central directory: uncompressed size
                }
            }
            index += 1
        }
        try Data(bytes).write(to: url)
    }
}

extension TemporaryDirectory {
    /// Every regular file under `path`, at any depth (empty when `path` does not exist).
    public static func regularFiles(under path: String) -> [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: path) else { return [] }
        var files: [String] = []
        while let relative = enumerator.nextObject() as? String {
            if enumerator.fileAttributes?[.type] as? FileAttributeType == .typeRegular {
                files.append((path as NSString).appendingPathComponent(relative))
            }
        }
        return files.sorted()
    }
}
