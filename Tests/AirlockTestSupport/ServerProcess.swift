public import Foundation

/// `airlock serve` as a child process on a free loopback port, stopped by PID.
public final class ServerProcess: @unchecked Sendable {
    // The process and pipe are set up in init and only read afterwards; the exit semaphore orders the rest.
    private let process = Process()
    private let exited = DispatchSemaphore(value: 0)
    /// The port the server listens on, read from its start-up log line.
    public let port: Int
    /// Everything the server wrote to standard error up to the line that announced the port.
    public let startupLog: String

    /// Starts `executable serve` in `directory` with `environment` added, and waits (at most `timeout` seconds)
    /// for the line that says it is serving.
    public init(executable: String, directory: String, environment: [String: String], arguments: [String] = [], timeout: TimeInterval = 60) throws {
        self.process.executableURL = URL(fileURLWithPath: executable)
        self.process.arguments = ["serve"] + arguments
        self.process.currentDirectoryURL = URL(fileURLWithPath: directory)
        var env = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        env["AIRLOCK_HTTP_HOST"] = "127.0.0.1"
        env["AIRLOCK_HTTP_PORT"] = "0"
        env["AIRLOCK_LOG_LEVEL"] = "notice"
        self.process.environment = env
        let errors = Pipe()
        self.process.standardError = errors
        self.process.standardOutput = FileHandle.nullDevice
        self.process.standardInput = FileHandle.nullDevice
        let exited = self.exited
        self.process.terminationHandler = { _ in exited.signal() }
        try self.process.run()

        // Read standard error on a queue until the serving line; the semaphore bounds the wait.
        let found = DispatchSemaphore(value: 0)
        let state = LogState()
        let handle = errors.fileHandleForReading
        Thread.detachNewThread {
            while true {
                let data = handle.availableData
                if data.isEmpty { break }
                if state.append(data) { found.signal() }
            }
            found.signal()
        }
        guard found.wait(timeout: .now() + timeout) == .success, let port = state.port else {
            self.process.terminate()
            throw ServerProcessError.didNotStart(log: state.text)
        }
        self.port = port
        self.startupLog = state.text
    }

    /// Starts the server like `init`, waiting on a thread of its own rather than on a cooperative thread.
    public static func start(executable: String, directory: String, environment: [String: String], arguments: [String] = []) async throws -> ServerProcess {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(
                    with: Result { try ServerProcess(executable: executable, directory: directory, environment: environment, arguments: arguments) }
                )
            }
        }
    }

    /// Stops the server like ``stop(signal:timeout:)``, waiting on a thread of its own.
    public func stopped(signal: Int32 = SIGTERM, timeout: TimeInterval = 60) async -> Int32? {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(returning: self.stop(signal: signal, timeout: timeout))
            }
        }
    }

    /// The process id.
    public var pid: Int32 { self.process.processIdentifier }

    /// Sends `signal` and waits at most `timeout` seconds for the process to exit; returns its status, or nil if
    /// it is still running (it is then killed).
    public func stop(signal: Int32 = SIGTERM, timeout: TimeInterval = 60) -> Int32? {
        kill(self.pid, signal)
        guard self.exited.wait(timeout: .now() + timeout) == .success else {
            kill(self.pid, SIGKILL)
            return nil
        }
        return self.process.terminationStatus
    }

    deinit {
        if self.process.isRunning {
            kill(self.pid, SIGKILL)
        }
    }
}

/// The server did not announce its port.
public enum ServerProcessError: Error, CustomStringConvertible {
    case didNotStart(log: String)
    public var description: String {
        switch self {
        case .didNotStart(let log): "airlock serve did not start:\n\(log)"
        }
    }
}

/// Collects the log and finds the announced port.
private final class LogState: @unchecked Sendable {
    private let lock = NSLock()
    private var buffer = ""
    private var found: Int?

    var text: String { self.lock.withLock { self.buffer } }
    var port: Int? { self.lock.withLock { self.found } }

    /// Appends output; returns true the first time the serving line appears.
    func append(_ data: Data) -> Bool {
        self.lock.withLock {
            self.buffer += String(decoding: data, as: UTF8.self)
            guard self.found == nil, let line = self.buffer.split(separator: "\n").first(where: { $0.contains("Airlock is serving") }),
                let colon = line.lastIndex(of: ":")
            else { return false }
            let digits = line[line.index(after: colon)...].prefix { $0.isNumber }
            self.found = Int(digits)
            return self.found != nil
        }
    }
}
