import AirlockTestSupport
import Crypto
import Foundation
import Testing

/// Three `airlock serve` processes on one PostgreSQL ledger and one shared data directory (issue 14): hand-offs
/// spread over the nodes and downloaded from others, a slot and a single-use token raced across nodes, one node
/// killed with SIGKILL mid-flight; afterwards every acknowledged transfer downloads intact from a survivor, and
/// `audit verify` and `doctor` find nothing wrong.
@Suite("cluster: three nodes, one PostgreSQL ledger, one shared store", .serialized)
struct ClusterTests {
    static let apiKey = "cluster-api-key-0123456789"

    @Test(.enabled(if: PostgresTestServer.isAvailable))
    func threeNodesShareOneLedgerAndStore() async throws {
        let (url, drop) = try await PostgresTestServer.createDatabase()
        let directory = try TemporaryDirectory()
        var environment = AirlockCommand.hermetic
        environment["AIRLOCK_STORAGE_DATA_DIRECTORY"] = directory.file("shared/var")
        environment["AIRLOCK_STORAGE_QUARANTINE_DIRECTORY"] = directory.file("shared/Quarantine")
        environment["AIRLOCK_LEDGER_BACKEND"] = "postgresql"
        environment["AIRLOCK_LEDGER_POSTGRESQL_URL"] = url
        environment["AIRLOCK_SERVERS"] = #"{"prosody": {"apiKey": "\#(Self.apiKey)"}}"#
        environment["AIRLOCK_TOKENS_SINGLE_USE"] = "true"
        environment["AIRLOCK_XEP0363_SECRET"] = "cluster-xep0363-secret-0123456789abcdef"

        // Three nodes start together: the migrations run once, under their lock.
        let nodes = try await withThrowingTaskGroup(of: (Int, ServerProcess).self) { group in
            for index in 0..<3 {
                var node = environment
                node["AIRLOCK_NODE_ID"] = "node\(index)"
                group.addTask {
                    (index, try await ServerProcess.start(executable: AirlockCommand.executable, directory: Fixtures.packageRoot.path, environment: node))
                }
            }
            return try await group.reduce(into: [Int: ServerProcess]()) { $0[$1.0] = $1.1 }.sorted { $0.key < $1.key }.map(\.value)
        }
        var survivors = nodes
        defer { for node in survivors { _ = node.stop() } }

        // Hand-offs spread over the nodes, each downloaded from the next node.
        var acknowledged: [(id: String, sha256: String, node: Int)] = []
        for index in 0..<9 {
            let content = Data("cluster file \(index) \(UUID().uuidString)\n".utf8)
            let (status, body) = try await Self.curl(nodes[index % 3], "/v1/transfers?sender=a@example.org&recipient=b@example.org&filename=f\(index).txt", data: content)
            #expect(status == "201")
            let transfer = try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any])
            let id = try #require(transfer["id"] as? String)
            acknowledged.append((id, SHA256.hash(data: content).map { String(format: "%02x", $0) }.joined(), index % 3))
            let downloads = try #require(transfer["downloads"] as? [[String: Any]])
            let link = try #require(downloads.first?["url"] as? String)
            let (fetched, bytes) = try await Self.curl(nodes[(index + 1) % 3], Self.path(of: link))
            #expect(fetched == "200")
            #expect(bytes == content)
            // Single use holds across nodes: the same link on a third node is refused.
            #expect(try await Self.curl(nodes[(index + 2) % 3], Self.path(of: link)).0 == "410")
        }

        // One single-use token raced on all three nodes: exactly one 200.
        let raced = Data("raced download \(UUID().uuidString)\n".utf8)
        let (_, racedBody) = try await Self.curl(nodes[0], "/v1/transfers?sender=a@example.org&recipient=b@example.org&filename=r.txt", data: raced)
        let racedTransfer = try #require(try JSONSerialization.jsonObject(with: racedBody) as? [String: Any])
        let racedLink = try #require((racedTransfer["downloads"] as? [[String: Any]])?.first?["url"] as? String)
        let tokenStatuses = try await withThrowingTaskGroup(of: String.self) { group in
            for node in nodes { group.addTask { try await Self.curl(node, Self.path(of: racedLink)).0 } }
            return try await group.reduce(into: [String]()) { $0.append($1) }
        }
        #expect(tokenStatuses.sorted() == ["200", "410", "410"])
        acknowledged.append((try #require(racedTransfer["id"] as? String), SHA256.hash(data: raced).map { String(format: "%02x", $0) }.joined(), 0))

        // One XEP-0363 slot raced on all three nodes: one 201, the rest 409.
        let secret = "cluster-xep0363-secret-0123456789abcdef"
        let slotBody = Data("slot body\n".utf8)
        let v = HMAC<SHA256>.authenticationCode(for: Data("slot1/s.txt \(slotBody.count)".utf8), using: SymmetricKey(data: Data(secret.utf8)))
            .map { String(format: "%02x", $0) }.joined()
        let slotStatuses = try await withThrowingTaskGroup(of: String.self) { group in
            for node in nodes {
                group.addTask { try await Self.curl(node, "/upload/slot1/s.txt?v=\(v)", data: slotBody, method: "PUT", key: nil).0 }
            }
            return try await group.reduce(into: [String]()) { $0.append($1) }
        }
        #expect(slotStatuses.sorted() == ["201", "409", "409"])

        // SIGKILL node 2 while uploads to it are in flight; uploads to the others go on.
        let inFlight = Task {
            try await withThrowingTaskGroup(of: (String, Data, Data).self) { group in
                for index in 0..<12 {
                    let content = Data((0..<(100_000 + index)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index) })
                    group.addTask {
                        let (status, body) = try await Self.curl(nodes[index % 3], "/v1/transfers?sender=a@example.org&recipient=b@example.org&filename=k\(index).bin", data: content)
                        return (status, body, content)
                    }
                }
                return try await group.reduce(into: [(String, Data, Data)]()) { $0.append($1) }
            }
        }
        _ = nodes[2].stop(signal: SIGKILL)
        survivors = [nodes[0], nodes[1]]
        for (status, body, content) in try await inFlight.value where status == "201" {
            let transfer = try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any])
            acknowledged.append((try #require(transfer["id"] as? String), SHA256.hash(data: content).map { String(format: "%02x", $0) }.joined(), -1))
        }

        // Every acknowledged transfer downloads intact from a survivor (a fresh link each: tokens are single use).
        for (index, transfer) in acknowledged.enumerated() {
            let node = survivors[index % 2]
            let (minted, tokenBody) = try await Self.curl(node, "/v1/transfers/\(transfer.id)/tokens", json: #"{"recipient":"b@example.org"}"#)
            #expect(minted == "201", "\(transfer.id)")
            let link = try #require((try JSONSerialization.jsonObject(with: tokenBody) as? [String: Any])?["url"] as? String)
            let (status, bytes) = try await Self.curl(survivors[(index + 1) % 2], Self.path(of: link))
            #expect(status == "200")
            #expect(SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined() == transfer.sha256)
        }

        // The audit chain is intact after writers on three nodes, and ledger and shared store agree.
        var admin = environment
        admin["AIRLOCK_NODE_ID"] = "admin"
        let verify = try await AirlockCommand.run(["audit", "verify"], environment: admin)
        #expect(verify.status == 0, "\(verify.standardOutput)\(verify.standardError)")
        for node in survivors { _ = await node.stopped() }
        survivors = []
        let doctor = try await AirlockCommand.run(["doctor"], environment: admin)
        #expect(doctor.status == 0, "\(doctor.standardOutput)\(doctor.standardError)")
        try await drop()
    }

    /// Two nodes that take the same new signatures at start split the retro-scan of the window between them
    /// through the ledger's leases: every content is checked once, not once per node.
    @Test(.enabled(if: PostgresTestServer.isAvailable))
    func twoNodesSplitOneRetroscanPass() async throws {
        let (url, drop) = try await PostgresTestServer.createDatabase()
        let directory = try TemporaryDirectory()
        let signatures = directory.file("signatures")
        try FileManager.default.createDirectory(atPath: signatures, withIntermediateDirectories: true)
        for name in try FileManager.default.contentsOfDirectory(atPath: Fixtures.signatureDirectory) {
            try FileManager.default.copyItem(
                atPath: (Fixtures.signatureDirectory as NSString).appendingPathComponent(name),
                toPath: (signatures as NSString).appendingPathComponent(name)
            )
        }
        var environment = AirlockCommand.hermetic
        environment["AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES"] = signatures
        environment["AIRLOCK_SCANNER_RELOAD_CHECK_SECONDS"] = "0"
        environment["AIRLOCK_STORAGE_DATA_DIRECTORY"] = directory.file("shared/var")
        environment["AIRLOCK_STORAGE_QUARANTINE_DIRECTORY"] = directory.file("shared/Quarantine")
        environment["AIRLOCK_LEDGER_BACKEND"] = "postgresql"
        environment["AIRLOCK_LEDGER_POSTGRESQL_URL"] = url
        environment["AIRLOCK_SERVERS"] = #"{"prosody": {"apiKey": "\#(Self.apiKey)"}}"#
        func node(_ index: Int) -> [String: String] {
            var node = environment
            node["AIRLOCK_NODE_ID"] = "node\(index)"
            return node
        }

        // The window's contents, handed off (and checked by the bundled signatures) on node 0.
        let count = 60
        let first = try await ServerProcess.start(executable: AirlockCommand.executable, directory: Fixtures.packageRoot.path, environment: node(0))
        for index in 0..<count {
            let (status, _) = try await Self.curl(
                first,
                "/v1/transfers?sender=a@example.org&recipient=b@example.org&filename=w\(index).bin",
                data: Fixtures.randomBytes(count: 64_000, seed: UInt64(70_000 + index))
            )
            #expect(status == "201")
        }
        _ = await first.stopped()
        let statusFiles = (0..<2).map { directory.file("shared/var/run/node\($0)/retroscan.json") }
        try? FileManager.default.removeItem(atPath: statusFiles[0])

        // New signatures on both nodes while they are down; they start together and each checks at start.
        try ReloadTests.signature("Airlock.Test.ClusterOffline", marker: Fixtures.randomBytes(count: 24, seed: 4))
            .write(to: URL(fileURLWithPath: (signatures as NSString).appendingPathComponent("offline.ndb")))
        let nodes = try await withThrowingTaskGroup(of: (Int, ServerProcess).self) { group in
            for index in 0..<2 {
                let environment = node(index)
                group.addTask {
                    (index, try await ServerProcess.start(executable: AirlockCommand.executable, directory: Fixtures.packageRoot.path, environment: environment))
                }
            }
            return try await group.reduce(into: [Int: ServerProcess]()) { $0[$1.0] = $1.1 }.sorted { $0.key < $1.key }.map(\.value)
        }
        var running = nodes
        defer { for node in running { _ = node.stop() } }
        for file in statusFiles {
            let finished = await ProcessTable.waitFor(timeout: 120) { () -> Bool? in
                guard let data = FileManager.default.contents(atPath: file),
                    let status = try? JSONSerialization.jsonObject(with: data) as? [String: Any], status["running"] as? Bool == false
                else { return nil }
                return true
            }
            #expect(finished == true, "\(file)")
        }
        var checked: [Int] = []
        for node in nodes {
            let (_, body) = try await Self.curl(node, "/metrics", key: nil)
            let line = String(decoding: body, as: UTF8.self).split(separator: "\n").first { $0.hasPrefix("airlock_retroscan_checked_total") }
            checked.append(line.flatMap { $0.split(separator: " ").last }.flatMap { Int(Double($0) ?? -1) } ?? 0)
        }
        // Each content once across the two nodes (how they split it depends on which started first).
        #expect(checked.reduce(0, +) == count, "checked per node: \(checked)")
        // As node 0's operator sees it: the whole window is checked.
        let status = try await AirlockCommand.run(["retroscan", "status", "--json"], environment: node(0))
        let progress = (try JSONSerialization.jsonObject(with: Data(status.standardOutput.utf8)) as? [String: Any])?["progress"] as? [String: Any]
        #expect(progress?["checked"] as? Int == count, "\(status.standardOutput)\(status.standardError)")
        #expect(progress?["pending"] as? Int == 0)
        print("retro-scan split over two nodes: \(checked)")
        for node in nodes { _ = await node.stopped() }
        running = []
        try await drop()
    }

    static func path(of url: String) -> String {
        url.range(of: "/v1/").map { String(url[$0.lowerBound...]) } ?? url
    }

    /// One request with curl to `node`; returns the status and the body.
    static func curl(
        _ node: ServerProcess,
        _ path: String,
        data: Data? = nil,
        json: String? = nil,
        method: String? = nil,
        key: String? = Self.apiKey
    ) async throws -> (String, Data) {
        let scratch = try TemporaryDirectory()
        var arguments = ["-s", "--max-time", "60", "-o", scratch.file("body"), "-w", "%{http_code}"]
        if let key { arguments += ["-H", "Authorization: Bearer \(key)"] }
        if let data { arguments += ["--data-binary", "@\(try scratch.write("upload", data))", "-H", "Content-Type: application/octet-stream"] }
        if let json { arguments += ["-H", "Content-Type: application/json", "--data", json] }
        if let method { arguments += ["-X", method] }
        let result = try await ProcessRunner.run("/usr/bin/curl", arguments + ["http://127.0.0.1:\(node.port)\(path)"])
        return (result.standardOutput, (try? Data(contentsOf: URL(fileURLWithPath: scratch.file("body")))) ?? Data())
    }
}
