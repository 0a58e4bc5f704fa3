import AirlockCore
import AirlockTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

/// The HTTP API's main paths on each ledger backend: the same requests, the same answers, on SQLite and on
/// PostgreSQL (the private instance `scripts/test` starts).
@Suite("HTTP API on each ledger")
struct LedgerBackendHTTPTests {
    enum Backend: String, CaseIterable, CustomStringConvertible, Sendable {
        case sqlite, postgresql
        var description: String { self.rawValue }
    }

    static var backends: [Backend] { PostgresTestServer.isAvailable ? Backend.allCases : [.sqlite] }

    /// A harness on `backend` (a fresh database for PostgreSQL), and what to call when done.
    static func harness(
        _ backend: Backend,
        _ adjust: @escaping (inout AirlockConfiguration) -> Void = { _ in }
    ) async throws -> (ServerHarness, @Sendable () async throws -> Void) {
        switch backend {
        case .sqlite:
            return (try ServerHarness(adjust), {})
        case .postgresql:
            let (url, drop) = try await PostgresTestServer.createDatabase()
            let settings = try AirlockConfiguration.PostgreSQL.parse(url)
            let harness = try ServerHarness {
                $0.ledger.backend = .postgresql(settings)
                adjust(&$0)
            }
            return (harness, drop)
        }
    }

    @Test(arguments: Self.backends)
    func handOffDownloadQuarantineAndRetract(_ backend: Backend) async throws {
        let (harness, drop) = try await Self.harness(backend) { $0.tokens.singleUse = true }
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            #expect(try await client.execute(uri: "/readyz", method: .get).status == .ok)
            let body = Data("minutes of the meeting \(backend)\n".utf8)
            let created = try await client.handOff(body, filename: "notes.txt", recipients: ["bob@example.org", "carol@example.org"])
            #expect(created.status == .created)
            let transfer = try created.decode(TransferBody.self)
            #expect(transfer.verdict == "clean")
            #expect(transfer.recipients == ["bob@example.org", "carol@example.org"])
            let url = try #require(transfer.downloads?.first?.url)
            // Single use: the first GET serves, the second is refused; HEAD does not consume.
            #expect(try await client.download(url, method: .head).status == .ok)
            let first = try await client.download(url)
            #expect(first.status == .ok)
            #expect(first.bytes == body)
            #expect(try await client.download(url).status == .gone)
            // A fresh token, a ranged download.
            let fresh = try await client.issueToken(transfer.id, recipient: "carol@example.org")
            #expect(fresh.status == .created)
            let freshURL = try #require((try JSONSerialization.jsonObject(with: fresh.bytes) as? [String: Any])?["url"] as? String)
            let ranged = try await client.download(freshURL, headers: [.range: "bytes=0-7"])
            #expect(ranged.status == .partialContent)
            #expect(ranged.bytes == body.prefix(8))
            // The same bytes again come from the verdict cache, and are stored once.
            let again = try await client.handOff(body, filename: "copy.txt").decode(TransferBody.self)
            #expect(again.sha256 == transfer.sha256)
            #expect(harness.files(under: harness.filesDirectory).count == 1)

            // Infected: quarantined, 451 for a token, never deletable by the IM server.
            let infected = try await client.handOff(Fixtures.eicar, filename: "e.com").decode(TransferBody.self)
            #expect(infected.state == "quarantined")
            let key: HTTPFields = [.authorization: "Bearer \(ServerHarness.prosodyKey)"]
            #expect(try await client.execute(uri: "/v1/transfers/\(infected.id)", method: .delete, headers: key).status == .conflict)
            #expect(try await client.issueToken(infected.id, recipient: "bob@example.org").status == .conflict)

            // Retract: 204, then its links are gone; the shared bytes stay for the copy.
            #expect(try await client.execute(uri: "/v1/transfers/\(transfer.id)", method: .delete, headers: key).status == .noContent)
            #expect(try await client.download(freshURL).status == .gone)
            #expect(harness.files(under: harness.filesDirectory).count == 1)
            let shown = try await client.execute(uri: "/v1/transfers/\(transfer.id)", method: .get, headers: key)
            #expect(try shown.decode(TransferBody.self).state == "deleted")
            // Another server does not see it.
            let other: HTTPFields = [.authorization: "Bearer \(ServerHarness.ejabberdKey)"]
            #expect(try await client.execute(uri: "/v1/transfers/\(again.id)", method: .get, headers: other).status == .notFound)
        }
        try await drop()
    }

    @Test(arguments: Self.backends)
    func xep0363SlotsAreClaimedOnce(_ backend: Backend) async throws {
        let (harness, drop) = try await Self.harness(backend)
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            let body = Data("slot content\n".utf8)
            let uri = XEP0363Tests.uri(["slot", "a.txt"], query: "v=\(XEP0363Tests.hmac("slot/a.txt \(body.count)"))")
            // Ten uploads race for one slot: exactly one is stored.
            // Each answer, or the error instead of one, so that a failure says what the racers got.
            let answers = await withTaskGroup(of: String.self) { group in
                for _ in 0..<10 {
                    group.addTask {
                        do {
                            let response = try await client.execute(uri: uri, method: .put, body: ByteBuffer(bytes: body))
                            return "\(response.status.code)" + (response.status.code >= 500 ? " \(String(buffer: response.body))" : "")
                        } catch {
                            return "error: \(error)"
                        }
                    }
                }
                return await group.reduce(into: [String]()) { $0.append($1) }
            }
            #expect(answers.filter { $0 == "201" }.count == 1, "answers: \(answers)")
            #expect(answers.filter { $0 == "409" }.count == 9, "answers: \(answers)")
            let fetched = try await client.execute(uri: XEP0363Tests.uri(["slot", "a.txt"]), method: .get)
            #expect(fetched.bytes == body)
        }
        try await drop()
    }
}
