import AirlockTestSupport
import Foundation
import GRDB
import Testing

/// `airlock token issue` is recorded in the audit log with the issuance row.
@Suite("token issue audit")
struct TokenIssueAuditTests {
    @Test func tokenIssueIsAuditedWithItsIssuance() async throws {
        let fixture = try AdminFixture()
        let server = try await fixture.startServer()
        let id = try #require(try await fixture.handOff(Data("minutes\n".utf8), filename: "minutes.txt", server: server)["id"] as? String)
        _ = await server.stopped()

        // The hand-off itself minted the URLs it returned; the command adds exactly one issuance.
        let issuances = try DatabaseQueue(path: fixture.databasePath)
        func tokenIds() throws -> Set<String> {
            try issuances.read { db in Set(try String.fetchAll(db, sql: "SELECT tokenId FROM tokenIssuance WHERE transferId = ?", arguments: [id])) }
        }
        let before = try tokenIds()
        let token = try await fixture.json(["token", "issue", id, "--recipient", "bob@example.org", "--ttl", "600"]) as? [String: Any]
        let expiresAt = try #require(token?["expiresAt"] as? String)
        let issued = try await fixture.auditEntries(action: "token.issued")
        #expect(issued.count == 1)
        let entry = try #require(issued.first)
        #expect(entry.entry["actor"] as? String == "admin:\(AdminFixture.operatingSystemUser)")
        #expect(entry.entry["transferId"] as? String == id)
        #expect(entry.details["recipient"] == "bob@example.org")
        let recorded = try #require(entry.details["expiresAt"].flatMap { ISO8601DateFormatter().date(from: $0) })
        let printed = try #require(Self.date(expiresAt))
        #expect(abs(recorded.timeIntervalSince(printed)) < 1)

        // The audit entry names the very issuance row written with it.
        #expect(try tokenIds().subtracting(before) == Set([entry.details["tokenId"] ?? "?"]))

        // A refused issuance writes neither.
        #expect(try await fixture.airlock(["token", "issue", id, "--recipient", "mallory@example.org"]).status == 2)
        #expect(try await fixture.auditEntries(action: "token.issued").count == 1)
        #expect(try tokenIds().count == before.count + 1)
        try issuances.close()
        #expect(try await fixture.airlock(["audit", "verify"]).status == 0)
    }

    /// A date as the JSON output writes it (ISO 8601, with or without fractional seconds).
    static func date(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.date(from: text)
    }

    /// A configuration file like the shipped one, with these quarantine keys instead of the single key.
}
