import AirlockTestSupport
import Foundation
import Testing

/// The content class in the admin commands (issue 16), on a ledger a real `airlock serve` wrote.
@Suite("content class in the CLI")
struct OpaqueCommandTests {
    @Test func transfersAndQuarantineShowTheContentClass() async throws {
        let fixture = try AdminFixture(extra: ["AIRLOCK_POLICY_OPAQUE_CONTENT": "quarantine"])
        let server = try await fixture.startServer()
        let opaque = try await fixture.handOff(Fixtures.randomBytes(count: 8192, seed: 77), filename: "photo.jpg.enc", server: server)
        let plain = try await fixture.handOff(Data(String(repeating: "notes ", count: 500).utf8), filename: "notes.txt", server: server)
        let opaqueId = try #require(opaque["id"] as? String)
        #expect(opaque["contentClass"] as? String == "opaque")
        #expect(opaque["reason"] as? String == "encrypted content cannot be inspected")
        #expect(plain["contentClass"] as? String == "inspected")

        let shown = try await fixture.airlock(["transfers", "show", opaqueId])
        #expect(shown.status == 0, "\(shown.standardError)")
        #expect(shown.standardOutput.contains("content class      opaque (not inspectable"))
        let listed = try #require(try await fixture.json(["transfers", "list"]) as? [[String: Any]])
        #expect(Set(listed.compactMap { $0["contentClass"] as? String }) == ["opaque", "inspected"])
        let table = try await fixture.airlock(["transfers", "list"])
        #expect(table.standardOutput.split(separator: "\n").first?.contains("CLASS") == true)
        let quarantined = try await fixture.airlock(["quarantine", "list"])
        let rows = quarantined.standardOutput.split(separator: "\n")
        #expect(rows.count == 2)
        #expect(rows.last?.contains("opaque") == true)
        #expect(rows.last?.contains("blocked: encrypted content cannot be inspected") == true)
        #expect(await server.stopped() == 0)
    }
}
