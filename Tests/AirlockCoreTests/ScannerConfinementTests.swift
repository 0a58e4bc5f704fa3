import AirlockTestSupport
import Foundation
import Logging
import Testing

@testable import AirlockCore

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 17: the scanner process, started as the broker starts it, cannot reach what the broker holds.
@Suite("scanner confinement")
struct ScannerConfinementTests {
    @Test func theScannerCannotOpenTheLedgerConnectOrExec() async throws {
        let directory = try TemporaryDirectory()
        var configuration = AirlockConfiguration.development
        configuration.storage.dataDirectory = directory.file("var")
        configuration.storage.quarantineDirectory = directory.file("Quarantine")
        configuration.scanner.signatureDirectories = [Fixtures.signatureDirectory]
        configuration.scanner.workers = 1
        #expect(configuration.scanner.isolation.enabled, "isolation is the default")
        var logger = Logger(label: "airlock.test")
        logger.logLevel = .warning
        let broker = try await Broker.start(configuration: configuration, logger: logger)
        defer { Task { try? await broker.shutdown() } }

        let pid = try #require(broker.inspector.scannerPIDs.first)
        #expect(ProcessTable.scannerProcesses(of: getpid()).contains(pid))

        // A listener this process can reach, and a ledger it can read: the scanner must do neither.
        let listener = try LoopbackListener()
        defer { listener.close() }
        #expect(listener.acceptsConnections(), "the control connection from the test process")
        let ledger = broker.store.databasePath
        #expect(FileManager.default.isReadableFile(atPath: ledger))

        let probe = try #require(try await broker.inspector.probeScannerConfinement(path: ledger, port: listener.port, program: "/bin/true"))
        #expect(probe.open == EACCES, "opening the ledger: \(String(cString: strerror(probe.open)))")
        #expect(probe.connect == EPERM, "connecting to 127.0.0.1:\(listener.port): \(String(cString: strerror(probe.connect)))")
        #expect(probe.exec == EPERM, "executing /bin/true: \(String(cString: strerror(probe.exec)))")

        let status = ProcessTable.status(of: pid)
        #expect(status["NoNewPrivs"] == "1")
        #expect(status["Seccomp"] == "2")
        let uid = status["Uid"]?.split(separator: "\t").first.map(String.init)
        if getuid() == 0 {
            #expect(uid != "0", "started as root, the scanner runs as scanner.isolation.user")
            #expect(uid == "\(getpwnam("nobody").pointee.pw_uid)")
        }
        #expect(broker.inspector.scannerConfinement?.landlockABI ?? 0 > 0, "this kernel has Landlock")

        // Nothing secret crosses: no configuration in the environment or the arguments.
        let environment = ProcessTable.environment(of: pid)
        #expect(!environment.contains { $0.hasPrefix("AIRLOCK_") }, "\(environment)")
        let command = String(decoding: (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data(), as: UTF8.self)
        let secrets = configuration.servers.values.flatMap(\.apiKeys) + [configuration.xep0363.secret]
        for secret in secrets where !secret.isEmpty {
            #expect(!command.contains(secret) && !environment.contains { $0.contains(secret) })
        }

        // And it still scans: the confinement leaves inspection working.
        let eicar = try directory.write("eicar.txt", Fixtures.eicar)
        let report = await broker.inspector.inspect(fileAt: eicar)
        #expect(report.verdict.kind == .infected)
    }
}

/// A TCP listener on 127.0.0.1, accepting on a thread of its own.
final class LoopbackListener: Sendable {
    let descriptor: Int32
    let port: Int

    init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) == 0 && getsockname(descriptor, $0, &length) == 0 }
        }
        guard descriptor >= 0, bound, listen(descriptor, 16) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        self.descriptor = descriptor
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether a connection from this process gets through (the listen backlog accepts it without accept()).
    func acceptsConnections() -> Bool {
        guard let connection = try? RawConnection(port: self.port) else { return false }
        connection.close()
        return true
    }

    func close() {
        Glibc.close(self.descriptor)
    }
}
