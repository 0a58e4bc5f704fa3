import AirlockTestSupport
import Foundation
import Testing

/// `airlock quotas` on a ledger a real `airlock serve` wrote (issue 16).
@Suite("airlock quotas")
struct QuotaCommandTests {
    @Test func usageIsListedHighestFirstWithItsLimits() async throws {
        let fixture = try AdminFixture(extra: [
            "AIRLOCK_QUOTAS_PER_UPLOADER_DAILY_FILES": "5", "AIRLOCK_QUOTAS_PER_UPLOADER_TOTAL_BYTES": "100000",
            "AIRLOCK_LIMITS_MAX_STORED_BYTES": "1000000",
        ])
        let server = try await fixture.startServer()
        _ = try await fixture.handOff(Data(String(repeating: "a", count: 300).utf8), filename: "a.txt", server: server)
        for (sender, size) in [("bob@example.org", 1000), ("carol@example.org", 20)] {
            let (status, _) = try await fixture.fetch(
                "/v1/transfers?sender=\(sender)&recipient=dave@example.org&filename=b.txt",
                method: "POST",
                body: String(repeating: "b", count: size),
                server: server
            )
            #expect(status == "201")
        }
        let shown = try #require(try await fixture.json(["quotas"]) as? [String: Any])
        let rows = try #require(shown["usage"] as? [[String: Any]])
        #expect(
            rows.map { "\($0["scope"] ?? "")/\($0["subject"] ?? "")" } == [
                "global/", "server/dev", "uploader/bob@example.org", "uploader/alice@example.org", "uploader/carol@example.org",
            ]
        )
        #expect(rows.map { $0["storedBytes"] as? Int } == [1320, 1320, 1000, 300, 20])
        #expect(rows[2]["todayFiles"] as? Int == 1)
        #expect((rows[2]["limits"] as? [String: Any])?["dailyFiles"] as? Int == 5)
        #expect((rows[0]["limits"] as? [String: Any])?["totalBytes"] as? Int == 1_000_000)
        #expect(rows[0]["todayBytes"] == nil)

        let table = try await fixture.airlock(["quotas", "--scope", "uploader"])
        #expect(table.status == 0, "\(table.standardError)")
        let lines = table.standardOutput.split(separator: "\n").map(String.init)
        #expect(lines.count == 5)
        #expect(lines[1].hasPrefix("SCOPE"))
        #expect(lines[2].hasPrefix("uploader  bob@example.org"))
        #expect(lines[2].contains("1000 B of 97.7 KiB"))
        #expect(lines[2].contains("1 of 5"))
        #expect(await server.stopped() == 0)
    }
}
