import Foundation

/// Runs a program to completion and captures its output.
public enum ProcessRunner {
    /// What a finished program left behind.
    public struct Result: Sendable {
        /// The exit status.
        public var status: Int32
        /// Everything written to standard output.
        public var standardOutput: String
        /// Everything written to standard error.
        public var standardError: String
    }

    /// A program that did not succeed when the test needed it to.
    public struct Failure: Error, CustomStringConvertible {
        /// The program.
        public var command: String
        /// Its result.
        public var result: Result
        /// Creates a failure.
        public init(command: String, result: Result) {
            self.command = command
            self.result = result
        }

        public var description: String {
            "\(self.command) exited \(self.result.status): \(self.result.standardError)"
        }
    }

    /// Runs `executable` to completion on a thread of its own, so waiting for it never blocks Swift's cooperative
    /// threads (which the servers under test need).
    public static func run(
        _ executable: String,
        _ arguments: [String],
        in directory: String? = nil,
        environment: [String: String] = [:]
    ) async throws -> Result {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread {
                continuation.resume(with: Swift.Result { try self.runBlocking(executable, arguments, in: directory, environment: environment) })
            }
        }
    }

    /// Runs `executable` with `arguments`, in `directory`, with `environment` added to this process's own, blocking
    /// the calling thread: for short commands in synchronous code.
    public static func runBlocking(
        _ executable: String,
        _ arguments: [String],
        in directory: String? = nil,
        environment: [String: String] = [:]
    ) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let directory {
            process.currentDirectoryURL = URL(fileURLWithPath: directory)
        }
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let output = Pipe()
        let error = Pipe()
        process.standardOutput = output
        process.standardError = error
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Read both pipes to the end before waiting, so a full pipe cannot block the child.
        let errorBox = DataBox()
        let errorDone = DispatchGroup()
        errorDone.enter()
        Thread.detachNewThread {
            errorBox.data = error.fileHandleForReading.readDataToEndOfFile()
            errorDone.leave()
        }
        let outputData = output.fileHandleForReading.readDataToEndOfFile()
        errorDone.wait()
        process.waitUntilExit()
        return Result(
            status: process.terminationStatus,
            standardOutput: String(decoding: outputData, as: UTF8.self),
            standardError: String(decoding: errorBox.data, as: UTF8.self)
        )
    }
}

/// Hands the standard-error bytes from the reading queue to the caller; the DispatchGroup orders the accesses.
private final class DataBox: @unchecked Sendable {
    var data = Data()
}
