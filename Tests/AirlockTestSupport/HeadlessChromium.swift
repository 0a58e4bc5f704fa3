public import Foundation

/// Headless Chromium (Debian's `chromium`) showing one page, as a child process with a profile of its own, stopped
/// by PID: for the tests that need a real browser (CORS for web clients).
///
/// `scripts/test`, which CI runs, sets `AIRLOCK_TEST_REQUIRE_CHROMIUM=1`: there a missing browser fails the browser
/// tests with a message saying to run `scripts/install-dependencies`, never skips them. Under plain `swift test`
/// on a machine without chromium, they are left out and say so.
public final class HeadlessChromium: @unchecked Sendable {
    // `process`, `profile` and `logFile` are set up in init and only read afterwards; `exited` orders the reads of
    // the exit status after the termination handler.
    private let process = Process()
    private let exited = DispatchSemaphore(value: 0)
    private let profile: TemporaryDirectory
    private let logFile: String

    /// Where Chromium is installed: `chromium` on `PATH` (Debian's launcher, which `exec`s the browser, so the PID
    /// is the browser's own).
    public static var executable: String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/chromium" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Whether browser tests must run: `scripts/test` sets `AIRLOCK_TEST_REQUIRE_CHROMIUM=1`, and CI sets `CI=true`.
    public static var isRequired: Bool {
        let environment = ProcessInfo.processInfo.environment
        return environment["AIRLOCK_TEST_REQUIRE_CHROMIUM"] == "1" || environment["CI"] == "true"
    }

    /// Whether to run browser tests: chromium is installed, or they are required (and fail without it).
    public static var isAvailable: Bool {
        if Self.executable == nil, !Self.isRequired {
            FileHandle.standardError.write(Data("browser tests left out: chromium is not installed (run scripts/install-dependencies)\n".utf8))
        }
        return Self.executable != nil || Self.isRequired
    }

    /// Why a browser test cannot run.
    public struct Unavailable: Error, CustomStringConvertible {
        /// Creates the error.
        public init() {}

        public var description: String {
            "chromium is not installed, and the browser tests are required (AIRLOCK_TEST_REQUIRE_CHROMIUM=1 or CI=true): "
                + "run scripts/install-dependencies, which installs Debian's chromium"
        }
    }

    /// Starts Chromium on `url` with a fresh profile; `onExit` is called with its status when the process ends.
    ///
    /// - Throws: ``Unavailable`` when chromium is not installed.
    public init(url: String, onExit: @escaping @Sendable (Int32) -> Void = { _ in }) throws {
        guard let executable = Self.executable else { throw Unavailable() }
        self.profile = try TemporaryDirectory()
        self.logFile = self.profile.file("chromium.log")
        // At the lowest CPU priority: the suite runs its servers in parallel with the browser tests, and a 2-core
        // machine running 50 concurrent hand-offs had them time out while Chromium started at full priority.
        // `nice` and Debian's launcher both exec, so the PID stays the browser's.
        self.process.executableURL = URL(fileURLWithPath: "/usr/bin/nice")
        self.process.arguments = [
            "-n", "19", executable,
            // We run as root in CI, where Chromium's sandbox cannot start.
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--user-data-dir=\(self.profile.file("profile"))",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions",
            url,
        ]
        _ = FileManager.default.createFile(atPath: self.logFile, contents: nil)
        self.process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: self.logFile))
        self.process.standardOutput = FileHandle.nullDevice
        self.process.standardInput = FileHandle.nullDevice
        let exited = self.exited
        self.process.terminationHandler = { process in
            exited.signal()
            onExit(process.terminationStatus)
        }
        try self.process.run()
    }

    /// Starts Chromium like `init`, on a thread of its own rather than a cooperative thread.
    public static func open(url: String, onExit: @escaping @Sendable (Int32) -> Void = { _ in }) async throws -> HeadlessChromium {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Result { try HeadlessChromium(url: url, onExit: onExit) })
            }
        }
    }

    /// The process id.
    public var pid: Int32 { self.process.processIdentifier }

    /// What Chromium wrote to standard error (its console and network errors among it).
    public var log: String {
        (try? String(contentsOfFile: self.logFile, encoding: .utf8)) ?? ""
    }

    /// Sends SIGTERM and waits, on a thread of its own, at most `timeout` seconds for Chromium to exit (then
    /// SIGKILL); returns its status, or nil if it had to be killed.
    public func close(timeout: TimeInterval = 15) async -> Int32? {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(returning: self.closeBlocking(timeout: timeout))
            }
        }
    }

    private func closeBlocking(timeout: TimeInterval) -> Int32? {
        // Only a browser that still runs has a process group that is certainly its own (see `deinit`): one that
        // exited earlier (a crash, a second close) may have left its number free for another test's process.
        let running = self.process.isRunning
        if running {
            kill(self.pid, SIGTERM)
        }
        defer { if running { self.endHelpers(timeout: timeout) } }
        guard self.exited.wait(timeout: .now() + timeout) == .success else {
            kill(self.pid, SIGKILL)
            if self.exited.wait(timeout: .now() + timeout) == .success {
                // Let a later close (or deinit) see the exit as well.
                self.exited.signal()
            }
            return nil
        }
        // Let a later close (or deinit) see the exit as well.
        self.exited.signal()
        return self.process.terminationStatus
    }

    /// Ends what is left of the browser's process group (the browser leads it: `Process` starts every child as a
    /// group of its own) and waits, at most `timeout` seconds, until no member is left. Its helpers (zygotes, GPU,
    /// network and storage services, renderers) outlive the browser for a moment and go on writing to the profile:
    /// removed under them, the profile was left behind, one directory per run.
    private func endHelpers(timeout: TimeInterval) {
        // Never `kill(0, …)`: that is this process's own group.
        guard self.pid > 0 else { return }
        let group = -self.pid
        let deadline = Date().addingTimeInterval(timeout)
        // The browser has exited (or was killed): nothing of the helpers' is worth waiting for.
        while Self.runs(inGroup: self.pid) {
            if Date() > deadline { return }
            kill(group, SIGKILL)
            // No event tells this process when another process's children are gone: look again shortly.
            usleep(20_000)
        }
    }

    /// Whether any process of process group `group` still runs. Zombies do not count: they write nothing, and the
    /// init process of a container may take a second to reap them.
    private static func runs(inGroup group: Int32) -> Bool {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return false }
        for entry in entries where entry.first?.isNumber == true {
            // `pid (comm) state ppid pgrp …`: comm may hold blanks and parentheses, so fields count from the last ")".
            guard let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { continue }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 2, Int32(fields[2]) == group, fields[0] != "Z" { return true }
        }
        return false
    }

    deinit {
        // Only while the browser runs is its process group certainly its own: once every member is gone the number
        // can be reused (pid_max is 32,768 here), and a group kill could hit another test's processes.
        if self.process.isRunning {
            kill(-self.pid, SIGKILL)
            kill(self.pid, SIGKILL)
        }
    }
}
