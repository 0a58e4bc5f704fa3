import Foundation
import Testing

@testable import AirlockCore

/// The notification outbox every ``Ledger`` keeps (README, "Notifications"), run on each backend like
/// ``LedgerContractTests``: events are written in the transaction of the change they report, one row per
/// subscribed webhook, and claimed for delivery in order per transfer and webhook, never by two claims at once.
@Suite("notification outbox contract")
struct OutboxContractTests {
    typealias Contract = LedgerContractTests

    static let alerts = AirlockConfiguration.Webhook(
        url: "https://alerts.example.org/airlock",
        secret: "alerts-secret-0123456789",
        events: [.transferQuarantined, .transferRecalled, .quarantineReleased, .quarantineDeleted]
    )
    static let operations = AirlockConfiguration.Webhook(
        url: "https://ops.example.org/hook",
        secret: "ops-secret-0123456789abc",
        events: [.signaturesReloaded, .transferRecalled]
    )
    static let both = [Self.alerts.url, Self.operations.url]

    /// Runs `body` against a fresh ledger of `backend` routing events to both webhooks.
    func withLedger(_ backend: LedgerBackend, _ body: (any Ledger) async throws -> Void) async throws {
        let (ledger, close) = try await backend.open(notifications: NotificationRouter([Self.alerts, Self.operations]))
        do {
            try await body(ledger)
        } catch {
            try? await close()
            throw error
        }
        try await close()
    }

    /// A quarantined hand-off publishing `transfer.quarantined`.
    static func quarantinedHandOff(_ id: String, at date: Date = Contract.at(minutes: 0)) -> (HandOffEntry, NotificationEvent) {
        var entry = Contract.handOff(
            id,
            verdict: .infected(signature: "Eicar-Signature"),
            recipients: ["bob@example.org", "carol@example.org"],
            created: date
        )
        let event = NotificationEvent(.transferQuarantined, transferId: id, at: date)
        entry.notifications = [event]
        return (entry, event)
    }

    static func body(_ delivery: OutboxDelivery) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(delivery.payload.utf8)) as? [String: Any])
    }

    /// Claims everything due at `now`, leased for a minute.
    static func claim(_ ledger: any Ledger, at now: Date, limit: Int = 100) async throws -> OutboxClaim {
        try await ledger.claimNotifications(webhooks: Self.both, now: now, leaseUntil: now.addingTimeInterval(60), limit: limit)
    }

    @Test(arguments: LedgerBackend.available)
    func aHandOffPublishesToItsSubscribersInItsTransaction(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            try await Contract.record(Contract.handOff("clean-1"), in: ledger)
            let (entry, event) = Self.quarantinedHandOff("held-1")
            try await Contract.record(entry, in: ledger)

            let claim = try await Self.claim(ledger, at: Contract.at(minutes: 1))
            // Only the webhook subscribed to transfer.quarantined, and nothing for the clean hand-off.
            #expect(claim.deliveries.map(\.webhook) == [Self.alerts.url])
            let delivery = try #require(claim.deliveries.first)
            #expect(delivery.eventId == event.id)
            #expect(delivery.event == "transfer.quarantined")
            #expect(delivery.attempts == 0)
            let body = try Self.body(delivery)
            #expect(body["id"] as? String == event.id)
            #expect(body["event"] as? String == "transfer.quarantined")
            let transfer = try #require(body["transfer"] as? [String: Any])
            #expect(transfer["id"] as? String == "held-1")
            #expect(transfer["recipients"] as? [String] == ["bob@example.org", "carol@example.org"])
            #expect(transfer["downloadedBy"] as? [String] == [])
            #expect(transfer["verdict"] as? String == "infected")
            #expect(transfer["signature"] as? String == "Eicar-Signature")
            #expect(transfer["sha256"] as? String == entry.transfer.sha256)
            #expect(transfer["size"] as? Int == Int(entry.transfer.size))
            #expect(transfer["filename"] as? String == "held-1.pdf")
            #expect(transfer["state"] as? String == "quarantined")

            // A hand-off that fails publishes nothing: its rows and its event go together.
            let (refused, _) = Self.quarantinedHandOff("held-2")
            await #expect(throws: Contract.Refusal.self) { try await ledger.recordHandOff(refused) { throw Contract.Refusal() } }
            #expect(try await ledger.rowCounts().notificationOutbox == 1)
        }
    }

    @Test(arguments: LedgerBackend.available)
    func aGroupCommitPublishesForTheMembersThatCommit(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let (first, firstEvent) = Self.quarantinedHandOff("group-1")
            let (second, _) = Self.quarantinedHandOff("group-2")
            let outcomes = try await ledger.recordHandOffs(
                [GroupMember(entry: first, inTransaction: {}), GroupMember(entry: second, inTransaction: { throw Contract.Refusal() })],
                beforeCommit: {}
            )
            #expect(outcomes.count == 2)
            let claim = try await Self.claim(ledger, at: Contract.at(minutes: 1))
            #expect(claim.deliveries.map(\.eventId) == [firstEvent.id])
            #expect(try await ledger.rowCounts().notificationOutbox == 1)
        }
    }

    @Test(arguments: LedgerBackend.available)
    func aChangePublishesTheTransferAsItIsAfterwards(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let (entry, _) = Self.quarantinedHandOff("held-1")
            try await Contract.record(entry, in: ledger)
            let audit = AuditEvent(at: Contract.at(minutes: 2), actor: "admin:root", action: "quarantine.released", transferId: "held-1")
            let release = NotificationEvent(.quarantineReleased, transferId: "held-1", at: Contract.at(minutes: 2), details: ["reason": "checked"])

            // Refused or skipped inside the transaction: no event.
            await #expect(throws: Contract.Refusal.self) {
                try await ledger.changeTransfer(id: "held-1", event: audit, notify: { _ in [release] }) { _ in throw Contract.Refusal() }
            }
            let skipped = Contract.Observed<String>()
            try await ledger.changeTransfer(
                id: "held-1",
                event: audit,
                notify: { _ in
                    skipped.append("notify")
                    return [release]
                }
            ) { _ in .skip }
            #expect(skipped.values.isEmpty)
            #expect(try await ledger.rowCounts().notificationOutbox == 1)

            let before = try await ledger.changeTransfer(
                id: "held-1",
                event: audit,
                notify: { before in
                    before.state == .quarantined ? [release] : []
                }
            ) { _ in .setState(.released) }
            #expect(before?.state == .quarantined)
            #expect(try await ledger.rowCounts().notificationOutbox == 2)
            let rows = try await ledger.exportSnapshot().notificationOutbox
            let row = try #require(rows.last)
            #expect(row.eventId == release.id)
            #expect(row.event == "quarantine.released")
            #expect(row.webhook == Self.alerts.url)
            #expect(row.orderKey == "held-1")
            let body = try #require(try JSONSerialization.jsonObject(with: Data(row.payload.utf8)) as? [String: Any])
            #expect((body["transfer"] as? [String: Any])?["state"] as? String == "released")
            #expect((body["details"] as? [String: String]) == ["reason": "checked"])
        }
    }

    @Test(arguments: LedgerBackend.available)
    func aTransferEventNamesWhoDownloaded(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            try await Contract.record(
                Contract.handOff("clean-1", recipients: ["bob@example.org", "carol@example.org", "dave@example.org"]),
                in: ledger
            )
            for (recipient, status) in [("bob@example.org", 200), ("bob@example.org", 206), ("carol@example.org", 404), (nil, 200)] {
                try await ledger.recordDownload(
                    DownloadRecord(
                        transferId: "clean-1",
                        recipient: recipient,
                        at: Contract.at(minutes: 1),
                        remoteAddress: nil,
                        bytes: 10,
                        status: status
                    )
                )
            }
            let recall = NotificationEvent(
                .transferRecalled,
                transferId: "clean-1",
                at: Contract.at(minutes: 2),
                details: ["signature": "Later.Found"]
            )
            try await ledger.enqueueNotification(recall)
            await #expect(throws: BrokerError.transferNotFound("nothing")) {
                try await ledger.enqueueNotification(NotificationEvent(.transferRecalled, transferId: "nothing", at: Contract.at(minutes: 2)))
            }
            // transfer.recalled goes to both webhooks, with the same event id.
            let claim = try await Self.claim(ledger, at: Contract.at(minutes: 3))
            #expect(Set(claim.deliveries.map(\.webhook)) == Set(Self.both))
            #expect(Set(claim.deliveries.map(\.eventId)) == [recall.id])
            let first = try #require(claim.deliveries.first)
            let transfer = try #require(try Self.body(first)["transfer"] as? [String: Any])
            #expect(transfer["downloadedBy"] as? [String] == ["bob@example.org"])
            #expect(transfer["downloads"] as? Int == 3)
            #expect(transfer["state"] as? String == "stored")
        }
    }

    @Test(arguments: LedgerBackend.available)
    func claimsKeepEachTransfersOrderAndRetryLater(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let t0 = Contract.at(minutes: 10)
            try await Contract.record(Contract.handOff("a"), in: ledger)
            try await Contract.record(Contract.handOff("b"), in: ledger)
            let a1 = NotificationEvent(.transferRecalled, transferId: "a", at: t0)
            let a2 = NotificationEvent(.quarantineDeleted, transferId: "a", at: t0)
            let b1 = NotificationEvent(.transferRecalled, transferId: "b", at: t0)
            for event in [a1, a2, b1] { try await ledger.enqueueNotification(event) }
            let alerts = [Self.alerts.url]
            let lease = t0.addingTimeInterval(30)

            // The oldest row of each transfer only: a2 waits for a1.
            let first = try await ledger.claimNotifications(webhooks: alerts, now: t0, leaseUntil: lease, limit: 10)
            #expect(first.deliveries.map(\.eventId) == [a1.id, b1.id])
            // Leased rows are not claimed again, and a2 still waits.
            #expect(try await ledger.claimNotifications(webhooks: alerts, now: t0, leaseUntil: lease, limit: 10).deliveries.isEmpty)
            #expect(try await ledger.pendingNotifications(webhooks: alerts) == 3)

            let ids = Dictionary(uniqueKeysWithValues: first.deliveries.map { ($0.eventId, $0.id) })
            try await ledger.completeNotification(id: try #require(ids[a1.id]), .delivered(at: t0))
            let retryAt = t0.addingTimeInterval(120)
            try await ledger.completeNotification(id: try #require(ids[b1.id]), .failed(error: "HTTP 503", retryAt: retryAt))
            #expect(try await ledger.pendingNotifications(webhooks: alerts) == 2)

            let second = try await ledger.claimNotifications(webhooks: alerts, now: t0, leaseUntil: lease, limit: 10)
            #expect(second.deliveries.map(\.eventId) == [a2.id])
            #expect(second.nextDue == retryAt)
            let third = try await ledger.claimNotifications(webhooks: alerts, now: retryAt, leaseUntil: retryAt.addingTimeInterval(30), limit: 10)
            // b1 is due again with its failed attempt counted; a2's lease has run out, so it is claimed again too.
            #expect(third.deliveries.map(\.eventId) == [a2.id, b1.id])
            #expect(third.deliveries.first { $0.eventId == b1.id }?.attempts == 1)
            let rows = try await ledger.exportSnapshot().notificationOutbox
            #expect(rows.first { $0.eventId == b1.id && $0.webhook == Self.alerts.url }?.lastError == "HTTP 503")

            // Only delivered rows are pruned, and only those delivered before the date.
            #expect(try await ledger.pruneNotifications(deliveredBefore: t0) == 0)
            #expect(try await ledger.pruneNotifications(deliveredBefore: t0.addingTimeInterval(1)) == 1)
            // a1 and b1 also went to the operations webhook (unclaimed here), a2 only to alerts: 5 rows, 4 left.
            #expect(try await ledger.rowCounts().notificationOutbox == 4)
            #expect(try await ledger.pendingNotifications(webhooks: alerts) == 2)

            // Released leases are claimable at once.
            try await ledger.releaseNotificationLeases()
            #expect(try await ledger.claimNotifications(webhooks: alerts, now: retryAt, leaseUntil: retryAt, limit: 10).deliveries.count == 2)
            // Another webhook's rows are not claimed for this one.
            #expect(
                try await ledger.claimNotifications(webhooks: ["https://elsewhere.example.org/"], now: retryAt, leaseUntil: retryAt, limit: 10)
                    .deliveries.isEmpty
            )
        }
    }

    @Test(arguments: LedgerBackend.available)
    func concurrentClaimsNeverShareARow(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { ledger in
            let t0 = Contract.at(minutes: 10)
            for index in 0..<24 {
                try await Contract.record(Contract.handOff("t\(index)"), in: ledger)
                try await ledger.enqueueNotification(NotificationEvent(.transferRecalled, transferId: "t\(index)", at: t0))
            }
            // 24 rows claimable at once, four claimers racing for five at a time: each row is claimed exactly once.
            let claimed = Contract.Observed<String>()
            let webhooks = [Self.operations.url]
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        var idle = 0
                        while idle < 1000 {
                            let claim = try await ledger.claimNotifications(
                                webhooks: webhooks,
                                now: t0,
                                leaseUntil: t0.addingTimeInterval(60),
                                limit: 5
                            )
                            guard !claim.deliveries.isEmpty else {
                                if try await ledger.pendingNotifications(webhooks: webhooks) == 0 { return }
                                idle += 1
                                await Task.yield()
                                continue
                            }
                            idle = 0
                            for delivery in claim.deliveries {
                                claimed.append(delivery.eventId)
                                try await ledger.completeNotification(id: delivery.id, .delivered(at: t0))
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(claimed.values.count == 24)
            #expect(Set(claimed.values).count == 24)
            #expect(try await ledger.pendingNotifications(webhooks: [Self.operations.url]) == 0)
        }
    }

    /// Every way of publishing wakes this process's delivery service once committed: each wait below returns only
    /// on a ring (the hour is never reached; the time limit fails the test instead).
    @Test(.timeLimit(.minutes(1)), arguments: LedgerBackend.available)
    func publishingWakesTheDeliveryService(backend: LedgerBackend) async throws {
        let router = NotificationRouter([Self.alerts, Self.operations])
        let (ledger, close) = try await backend.open(notifications: router)
        do {
            try await ledger.enqueueNotification(.signaturesReloaded(version: "daily-27001", at: Contract.at(minutes: 0)))
            await router.waitForEnqueued(timeout: .seconds(3600))
            let (single, _) = Self.quarantinedHandOff("held-1")
            try await Contract.record(single, in: ledger)
            await router.waitForEnqueued(timeout: .seconds(3600))
            let (grouped, _) = Self.quarantinedHandOff("held-2")
            _ = try await ledger.recordHandOffs([GroupMember(entry: grouped, inTransaction: {})], beforeCommit: {})
            await router.waitForEnqueued(timeout: .seconds(3600))
            let audit = AuditEvent(at: Contract.at(minutes: 1), actor: "admin:root", action: "transfer.deleted", transferId: "held-2")
            let deleted = NotificationEvent(.quarantineDeleted, transferId: "held-2", at: Contract.at(minutes: 1))
            try await ledger.changeTransfer(id: "held-2", event: audit, notify: { _ in [deleted] }) { _ in .setState(.deleted) }
            await router.waitForEnqueued(timeout: .seconds(3600))
            // A ring that comes while the service waits (or just before) wakes it too.
            async let woken: Void = router.waitForEnqueued(timeout: .seconds(3600))
            try await ledger.enqueueNotification(.signaturesReloaded(version: "daily-27002", at: Contract.at(minutes: 2)))
            await woken
            #expect(try await ledger.rowCounts().notificationOutbox == 5)
        } catch {
            try? await close()
            throw error
        }
        try await close()
    }

    @Test(arguments: LedgerBackend.available)
    func aCopyCarriesTheOutbox(backend: LedgerBackend) async throws {
        try await self.withLedger(backend) { source in
            let (entry, _) = Self.quarantinedHandOff("held-1")
            try await Contract.record(entry, in: source)
            try await source.enqueueNotification(.signaturesReloaded(version: "daily-27001", at: Contract.at(minutes: 1)))
            let claim = try await Self.claim(source, at: Contract.at(minutes: 2))
            try await source.completeNotification(id: try #require(claim.deliveries.first?.id), .delivered(at: Contract.at(minutes: 2)))
            let snapshot = try await source.exportSnapshot()
            #expect(snapshot.notificationOutbox.count == 2)
            #expect(snapshot.counts.notificationOutbox == 2)

            let (target, close) = try await backend.open(notifications: NotificationRouter([Self.alerts, Self.operations]))
            do {
                try await target.importSnapshot(snapshot) { _, _ in }
                #expect(try await target.exportSnapshot().notificationOutbox == snapshot.notificationOutbox)
                // The copy goes on where the source was: the delivered row stays delivered, the next id follows.
                #expect(try await target.pendingNotifications(webhooks: Self.both) == 1)
                try await target.enqueueNotification(.signaturesReloaded(version: "daily-27002", at: Contract.at(minutes: 3)))
                let ids = try await target.exportSnapshot().notificationOutbox.compactMap(\.id)
                #expect(ids == ids.sorted() && Set(ids).count == 3)
            } catch {
                try? await close()
                throw error
            }
            try await close()
        }
    }
}
