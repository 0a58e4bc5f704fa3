import CAirlockSandbox
import Crypto
public import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The bytes on disk (DESIGN §5): staging for uploads in flight, content-addressed clean files, and the
/// encrypted quarantine. Files are 0600, directories 0700; every move into place is an atomic rename.
///
/// All methods block: call them off the cooperative pool.
public struct FileStore: Sendable {
    /// `storage.dataDirectory`.
    public let dataDirectory: String
    /// `var/staging/<node>`: this node's uploads in flight. Per node, so that nodes sharing the store never
    /// touch each other's; on the store's filesystem, so that a finished upload moves into place by `rename`.
    public let stagingDirectory: String
    /// `var/staging`: every node's staging directory.
    public let stagingRoot: String
    /// `var/files`.
    public let filesDirectory: String
    /// `var/scanning/<node>`: where this node's libclamav extracts what it scans inside files, one directory per scan.
    public let scanningDirectory: String
    /// This node's `node.id`.
    public let node: String
    /// `var/run/<node>`: this node's pid file and reload status, where `airlock reload` finds them.
    public var runDirectory: String {
        ((self.dataDirectory as NSString).appendingPathComponent("run") as NSString).appendingPathComponent(self.node)
    }
    /// `storage.quarantineDirectory`.
    public let quarantineDirectory: String
    /// The quarantine keys and the id of the active one.
    let cipher: QuarantineCipher

    /// Creates a store over the configured directories for node `node` (nothing is touched until ``prepare()``).
    public init(_ storage: AirlockConfiguration.Storage, node: String = ProcessInfo.processInfo.hostName) {
        self.dataDirectory = storage.dataDirectory
        self.node = node
        self.stagingRoot = (storage.dataDirectory as NSString).appendingPathComponent("staging")
        self.stagingDirectory = (self.stagingRoot as NSString).appendingPathComponent(node)
        self.filesDirectory = (storage.dataDirectory as NSString).appendingPathComponent("files")
        self.scanningDirectory = ((storage.dataDirectory as NSString).appendingPathComponent("scanning") as NSString).appendingPathComponent(node)
        self.quarantineDirectory = storage.quarantineDirectory
        self.cipher = QuarantineCipher(
            keys: storage.quarantineKeys.mapValues { SymmetricKey(data: $0) },
            activeKeyId: storage.activeQuarantineKeyId
        )
    }

    /// The ledger's path.
    public var databasePath: String {
        (self.dataDirectory as NSString).appendingPathComponent("airlock.sqlite")
    }

    /// Files another node may still be writing are left alone until they are this old.
    public static let inFlightGrace: TimeInterval = 15 * 60

    /// Creates the directories (0700) and empties this node's staging and scanning: its uploads in flight at a crash
    /// are discarded, and so is whatever libclamav was extracting from them. Other nodes' directories are not
    /// touched; the quarantine's temporary files are removed when this node wrote them, or when they are older
    /// than ``inFlightGrace`` (an interrupted `quarantine rekey`, a node that is gone).
    ///
    /// - Returns: the number of stale staging files removed.
    @discardableResult
    public func prepare() throws -> Int {
        for directory in [
            self.dataDirectory, self.stagingRoot, self.stagingDirectory, self.filesDirectory,
            (self.scanningDirectory as NSString).deletingLastPathComponent, self.scanningDirectory, self.quarantineDirectory,
            (self.runDirectory as NSString).deletingLastPathComponent, self.runDirectory,
        ] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            chmod(directory, 0o700)
        }
        let stale = try FileManager.default.contentsOfDirectory(atPath: self.stagingDirectory)
        for name in stale {
            try FileManager.default.removeItem(atPath: (self.stagingDirectory as NSString).appendingPathComponent(name))
        }
        for name in try FileManager.default.contentsOfDirectory(atPath: self.scanningDirectory) {
            try FileManager.default.removeItem(atPath: (self.scanningDirectory as NSString).appendingPathComponent(name))
        }
        // Temporary files of an interrupted quarantine write are never complete: remove this node's, and others' once
        // nobody can still be writing them.
        let now = Date()
        for name in try FileManager.default.contentsOfDirectory(atPath: self.quarantineDirectory) where name.hasPrefix(".tmp-") {
            let path = (self.quarantineDirectory as NSString).appendingPathComponent(name)
            if name.hasPrefix(".tmp-\(self.node)-") || Self.age(of: path, now: now) > Self.inFlightGrace {
                try FileManager.default.removeItem(atPath: path)
            }
        }
        return stale.count
    }

    /// A fresh staging path for one upload.
    public func newStagingPath() -> String {
        (self.stagingDirectory as NSString).appendingPathComponent(UUID.random().uuidString)
    }

    /// Where clean content with this hash lives: `files/ab/cd/<sha256>`.
    public func cleanPath(sha256: String) -> String {
        let first = sha256.prefix(2)
        let second = sha256.dropFirst(2).prefix(2)
        return "\(self.filesDirectory)/\(first)/\(second)/\(sha256)"
    }

    /// Where a quarantined transfer's encrypted bytes live.
    public func quarantinePath(transferId: String) -> String {
        (self.quarantineDirectory as NSString).appendingPathComponent(transferId)
    }

    /// Moves a finished staging file into the content store (identical content is stored once).
    ///
    /// - Parameter synced: whether the staging file's bytes are already on disk (``syncFile(_:)``); if not, and
    ///   they become new content, they are synced before the rename.
    /// - Parameter syncDirectory: whether to sync the directories that gained entries now; a group commit passes
    ///   false (with `synced` true) and makes its members' bytes and names durable with one ``syncFilesystem(containing:)``.
    /// - Returns: the directories that gained entries, or nil when the content was already stored.
    @discardableResult
    public func storeClean(stagingPath: String, sha256: String, synced: Bool = true, syncDirectory: Bool = true) throws -> StoredClean? {
        let destination = self.cleanPath(sha256: sha256)
        let first = "\(self.filesDirectory)/\(sha256.prefix(2))"
        let directory = "\(first)/\(sha256.dropFirst(2).prefix(2))"
        // System calls rather than FileManager: this runs inside the ledger's write transaction on every hand-off.
        // A directory created here gained its parent an entry: that parent is synced too (here, even when the rename
        // fails after the mkdir: the next hand-off into the directory would not know to).
        var created = 0
        func gainedEntries() -> StoredClean {
            StoredClean(directoriesToSync: Array([directory, first, self.filesDirectory].prefix(1 + min(created, 2))))
        }
        do {
            // Content already stored lives in a directory that existed (created == 0): nothing changed but the unlink.
            if access(destination, F_OK) == 0 {
                guard unlink(stagingPath) == 0 else { throw StoreError.io(operation: "remove \(stagingPath)", errno: errno) }
                return nil
            }
            if !synced {
                try Self.syncFile(stagingPath)
            }
            // The rename first: its directory is one of 65,536, made once and then almost always there. Only when it
            // is missing (ENOENT) are the directories made and the rename tried again.
            if Glibc.rename(stagingPath, destination) != 0 {
                guard errno == ENOENT else {
                    throw StoreError.io(operation: "rename \(stagingPath) to \(destination)", errno: errno)
                }
                created = try Self.makeDirectory(directory, parentsUpTo: self.filesDirectory)
                try Self.rename(stagingPath, to: destination)
            }
        } catch {
            // Best effort on the way out: the hand-off fails with the first error anyway.
            if syncDirectory { for directory in gainedEntries().directoriesToSync.dropFirst() { try? Self.syncDirectory(directory) } }
            throw error
        }
        let stored = gainedEntries()
        if syncDirectory {
            for directory in stored.directoriesToSync { try Self.syncDirectory(directory) }
        }
        return stored
    }

    /// What ``storeClean(stagingPath:sha256:synced:syncDirectory:)`` changed on disk.
    public struct StoredClean: Sendable, Equatable {
        /// The directories that gained an entry: `files/ab/cd` for the new file, and above it each directory whose
        /// child was just created (`files/ab`, `files`). Syncing them makes the new file's name durable.
        public var directoriesToSync: [String]
    }

    /// Encrypts a staging file into the quarantine under the active key and removes the plaintext.
    public func quarantine(stagingPath: String, transferId: String) throws {
        let destination = self.quarantinePath(transferId: transferId)
        let temporary = (self.quarantineDirectory as NSString).appendingPathComponent(".tmp-\(self.node)-\(transferId)")
        try self.cipher.encrypt(from: stagingPath, to: temporary, transferId: transferId)
        try Self.rename(temporary, to: destination)
        try Self.syncDirectory(self.quarantineDirectory)
        try FileManager.default.removeItem(atPath: stagingPath)
    }

    /// Encrypts the clean content `sha256` into the quarantine as transfer `transferId`'s (a recall): synced and
    /// in place when this returns. The clean file stays; it is removed once no live transfer shares it.
    public func quarantineClean(sha256: String, transferId: String) throws {
        let destination = self.quarantinePath(transferId: transferId)
        let temporary = (self.quarantineDirectory as NSString).appendingPathComponent(".tmp-\(self.node)-\(transferId)")
        try self.cipher.encrypt(from: self.cleanPath(sha256: sha256), to: temporary, transferId: transferId)
        try Self.rename(temporary, to: destination)
        try Self.syncDirectory(self.quarantineDirectory)
    }

    /// Decrypts a quarantined transfer to a new file at `destination` (0600); an existing file or symbolic link
    /// there is refused (``StoreError/destinationExists(path:)``), and a partial file is removed on failure.
    public func exportQuarantined(transferId: String, to destination: String) throws {
        let output = try Self.createExclusiveFile(destination)
        do {
            try self.decryptQuarantined(transferId: transferId, into: output)
            try output.close()
        } catch {
            try? output.close()
            unlink(destination)
            throw error
        }
    }

    /// Decrypts a quarantined transfer into `output`, an empty file opened for writing, and syncs it.
    func decryptQuarantined(transferId: String, into output: FileHandle) throws {
        try self.cipher.decrypt(from: self.quarantinePath(transferId: transferId), into: output, transferId: transferId)
    }

    /// Creates a new file at `path` for writing, mode 0600 whatever the umask. It never opens an existing file and
    /// never follows a symbolic link (`O_CREAT|O_EXCL|O_NOFOLLOW`).
    ///
    /// - Throws: ``StoreError/destinationExists(path:)`` when something (a file, a directory, a link) is there.
    /// Replaces `path` with `data` atomically (a private temporary file renamed over it), mode 0600 whatever the
    /// umask: the small state files of `var/run` (pid, reload and retro-scan status).
    public static func writePrivately(_ data: Data, to path: String) throws {
        let temporary = "\(path).tmp-\(getpid())-\(UUID().uuidString.prefix(8))"
        let handle = try Self.createExclusiveFile(temporary)
        do {
            try handle.write(contentsOf: data)
            try handle.close()
            try Self.rename(temporary, to: path)
        } catch {
            try? handle.close()
            unlink(temporary)
            throw error
        }
    }

    static func createExclusiveFile(_ path: String) throws -> FileHandle {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            let code = errno
            if code == EEXIST || code == ELOOP { throw StoreError.destinationExists(path: path) }
            throw StoreError.io(operation: "create \(path)", errno: code)
        }
        // The umask may have narrowed 0600 (never widened it); set it exactly.
        guard fchmod(descriptor, 0o600) == 0 else {
            let code = errno
            close(descriptor)
            unlink(path)
            throw StoreError.io(operation: "set mode 0600 on \(path)", errno: code)
        }
        return FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
    }

    /// The id of the key new quarantined files are encrypted with.
    public var activeQuarantineKeyId: String { self.cipher.activeKeyId }

    /// The key id a quarantined file names in its header; nil for a file in the first format (`ALQ1`), which
    /// does not record it.
    ///
    /// - Throws: ``StoreError/corruptQuarantine(path:)`` when the file is not in Airlock's quarantine format.
    public func quarantineKeyId(transferId: String) throws -> String? {
        try QuarantineCipher.keyId(ofFileAt: self.quarantinePath(transferId: transferId))
    }

    /// A quarantined file encrypted again under the active key, waiting to replace the original.
    public struct RekeyedFile: Sendable, Equatable {
        /// The new encrypted file, synced, beside the original.
        public var temporaryPath: String
        /// The key the original was under.
        public var fromKeyId: String
        /// The SHA-256 of the decrypted bytes.
        public var sha256: String
    }

    /// Encrypts a quarantined transfer again under the active key into a synced temporary file beside it; nothing
    /// is replaced yet (``replaceQuarantined(transferId:with:)`` does that, atomically).
    ///
    /// - Returns: nil when the file is already under the active key.
    public func reencryptQuarantined(transferId: String) throws -> RekeyedFile? {
        let path = self.quarantinePath(transferId: transferId)
        if try QuarantineCipher.keyId(ofFileAt: path) == self.cipher.activeKeyId { return nil }
        let temporary = (self.quarantineDirectory as NSString).appendingPathComponent(".tmp-rekey-\(transferId)")
        do {
            let (fromKeyId, sha256) = try self.cipher.reencrypt(from: path, to: temporary, transferId: transferId)
            return RekeyedFile(temporaryPath: temporary, fromKeyId: fromKeyId, sha256: sha256)
        } catch {
            unlink(temporary)
            throw error
        }
    }

    /// Renames a file from ``reencryptQuarantined(transferId:)`` over the original: a crash leaves one or the other,
    /// never neither.
    public func replaceQuarantined(transferId: String, with rekeyed: RekeyedFile) throws {
        try Self.rename(rekeyed.temporaryPath, to: self.quarantinePath(transferId: transferId))
        try Self.syncDirectory(self.quarantineDirectory)
    }

    /// Whether the file at `path` starts like an encrypted quarantine file (either format).
    public static func isQuarantineFile(_ path: String) -> Bool {
        do {
            _ = try QuarantineCipher.keyId(ofFileAt: path)
            return true
        } catch {
            return false
        }
    }

    /// Removes clean content.
    public func removeClean(sha256: String) throws {
        let path = self.cleanPath(sha256: sha256)
        if FileManager.default.fileExists(atPath: path) {
            try FileManager.default.removeItem(atPath: path)
        }
    }

    /// Removes a quarantined transfer's bytes.
    public func removeQuarantined(transferId: String) throws {
        let path = self.quarantinePath(transferId: transferId)
        if FileManager.default.fileExists(atPath: path) {
            try FileManager.default.removeItem(atPath: path)
        }
    }

    /// Every regular file under `directory`, sorted.
    static func regularFiles(under directory: String) -> [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: directory) else { return [] }
        var files: [String] = []
        while let relative = enumerator.nextObject() as? String {
            if enumerator.fileAttributes?[.type] as? FileAttributeType == .typeRegular {
                files.append((directory as NSString).appendingPathComponent(relative))
            }
        }
        return files.sorted()
    }

    /// Creates `path` (0700) and any missing parents below `root`, which must exist; an existing directory is fine.
    ///
    /// - Returns: how many directories it created, `path` first then its parents (0 when `path` existed).
    @discardableResult
    static func makeDirectory(_ path: String, parentsUpTo root: String) throws -> Int {
        if mkdir(path, 0o700) == 0 { return 1 }
        if errno == EEXIST { return 0 }
        guard errno == ENOENT, path.count > root.count else {
            throw StoreError.io(operation: "create directory \(path)", errno: errno)
        }
        let parents = try Self.makeDirectory((path as NSString).deletingLastPathComponent, parentsUpTo: root)
        if mkdir(path, 0o700) == 0 { return parents + 1 }
        guard errno == EEXIST else {
            throw StoreError.io(operation: "create directory \(path)", errno: errno)
        }
        return parents
    }

    static func rename(_ source: String, to destination: String) throws {
        guard Glibc.rename(source, destination) == 0 else {
            throw StoreError.io(operation: "rename \(source) to \(destination)", errno: errno)
        }
    }

    /// How long ago `path` was last written (0 when it cannot be read).
    static func age(of path: String, now: Date) -> TimeInterval {
        guard let modified = try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date else { return 0 }
        return now.timeIntervalSince(modified)
    }

    /// Whether clean bytes with this digest are stored.
    public func hasClean(sha256: String) -> Bool {
        access(self.cleanPath(sha256: sha256), F_OK) == 0
    }

    /// Writes a new staging file (mode 0600) holding `bytes`, not synced (``syncFile(_:)`` does that where needed).
    public static func writeStagingFile(_ path: String, bytes: UnsafeRawBufferPointer) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw StoreError.io(operation: "create \(path)", errno: errno) }
        defer { close(descriptor) }
        var offset = 0
        while offset < bytes.count {
            let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw StoreError.io(operation: "write \(path)", errno: errno)
            }
            offset += written
        }
    }

    /// Flushes a file's bytes to disk (before it is renamed into the store).
    public static func syncFile(_ path: String) throws {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw StoreError.io(operation: "open \(path) to sync it", errno: errno) }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 else { throw StoreError.io(operation: "fsync \(path)", errno: errno) }
    }

    /// Writes back every dirty page and inode of the filesystem holding `path` (the store's) and waits for the disk:
    /// one `syncfs` makes a whole group's new files and their directory entries durable.
    ///
    /// - Throws: ``StoreError/io(operation:errno:)`` when the filesystem reports a write-back error.
    static func syncFilesystem(containing path: String) throws {
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw StoreError.io(operation: "open \(path) to sync its filesystem", errno: errno) }
        defer { close(descriptor) }
        guard airlock_syncfs(descriptor) == 0 else { throw StoreError.io(operation: "syncfs \(path)", errno: errno) }
    }

    /// Makes the entries of the directory at `path` durable (its new and renamed names).
    ///
    /// - Throws: ``StoreError/io(operation:errno:)`` when the directory cannot be opened or the filesystem reports a
    ///   write-back error: what was just named there is not known to be on the disk, so it must not be acknowledged.
    ///   `EINVAL` and `EBADF` from `fsync` pass: some filesystems cannot sync a directory at all (PostgreSQL's
    ///   `fsync_fname` makes the same exception).
    static func syncDirectory(_ path: String) throws {
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { throw StoreError.io(operation: "open the directory \(path) to sync it", errno: errno) }
        defer { close(descriptor) }
        guard fsync(descriptor) == 0 || errno == EINVAL || errno == EBADF else {
            throw StoreError.io(operation: "fsync the directory \(path)", errno: errno)
        }
    }
}

/// A storage failure.
public enum StoreError: Error, CustomStringConvertible {
    /// A system call failed.
    case io(operation: String, errno: Int32)
    /// Quarantined bytes do not decrypt: the file was altered, or it is not a quarantine file.
    case corruptQuarantine(path: String)
    /// A quarantined file names a key the configuration does not have.
    case unknownQuarantineKey(path: String, keyId: String)
    /// No configured key opens a quarantined file of the first format (which does not name its key).
    case noQuarantineKeyOpens(path: String, keyIds: [String])
    /// A new file was to be created where something already is.
    case destinationExists(path: String)

    public var description: String {
        switch self {
        case .io(let operation, let code):
            "\(operation) failed: \(String(cString: strerror(code)))"
        case .corruptQuarantine(let path):
            "\(path) does not decrypt: it was altered, truncated, or is not an Airlock quarantine file"
        case .unknownQuarantineKey(let path, let keyId):
            "\(path) is encrypted with quarantine key \"\(keyId)\", which is not configured: add it back to storage.quarantineKeys"
        case .noQuarantineKeyOpens(let path, let keyIds):
            "none of the configured quarantine keys (\(keyIds.joined(separator: ", "))) decrypts \(path): add the key it was "
                + "written with to storage.quarantineKeys (or check that the file was not altered)"
        case .destinationExists(let path):
            "\(path) already exists (a file, a directory or a symbolic link): nothing is overwritten or followed; "
                + "choose a new path, or remove the existing one first"
        }
    }
}
