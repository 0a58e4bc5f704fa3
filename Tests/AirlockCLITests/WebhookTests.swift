import AirlockTestSupport
import Crypto
import Foundation
import Testing

/// Notifications (README, "Notifications") end to end: the real `airlock serve` and admin commands, a webhook
/// receiver on 127.0.0.1 that checks every signature itself.
@Suite("webhooks", .serialized)
struct WebhookTests {
    static let secret = "whsec-" + "0f3c9a7d41e2b8c65d0a9e1f7b3c2d4e"

    /// The environment that subscribes `receiver` to every event; retries at most a second apart, and the outbox
    /// read every second for rows the admin commands enqueue.
    static func environment(port: Int) -> [String: String] {
        let events =
            #"["transfer.quarantined", "transfer.recalled", "quarantine.released", "quarantine.deleted", "signatures.reloaded", "signatures.reloadFailed"]"#
        return [
            "AIRLOCK_NOTIFICATIONS_WEBHOOKS":
                #"[{"url": "http://127.0.0.1:\#(port)/hooks/airlock", "secret": "\#(Self.secret)", "events": \#(events)}]"#,
            "AIRLOCK_NOTIFICATIONS_RETRY_MAX_SECONDS": "1",
            "AIRLOCK_NOTIFICATIONS_POLL_SECONDS": "1",
            "AIRLOCK_NOTIFICATIONS_TIMEOUT_SECONDS": "5",
        ]
    }

    static func sha256(_ data: Data) -> String {
        SHA256.hash(data: data).map { String(format: "%02x", $0) }.joined()
    }

    /// The requests the receiver accepted (2xx), one per delivery id, in arrival order.
    static func accepted(_ requests: [WebhookReceiver.Request]) -> [WebhookReceiver.Request] {
        var seen: Set<String> = []
        return requests.filter { request in
            guard (200..<300).contains(request.answeredStatus), let delivery = request.delivery else { return false }
            return seen.insert(delivery).inserted
        }
    }

    @Test func aQuarantinedHandOffIsPostedSignedWithTheTransfer() async throws {
        let receiver = try await WebhookReceiver.start(secret: Self.secret)
        let fixture = try AdminFixture(extra: Self.environment(port: receiver.port))
        let server = try await fixture.startServer()
        let clean = try await fixture.handOff(Fixtures.png, filename: "photo.png", server: server)
        #expect(clean["verdict"] as? String == "clean")
        let eicar = Fixtures.eicar
        let held = try await fixture.handOff(eicar, filename: "invoice.com", server: server, recipient: "carol@example.org")
        let id = try #require(held["id"] as? String)

        let requests = try await receiver.requests(atLeast: 1)
        #expect(await server.stopped() == 0)
        await receiver.stop()

        // Only the quarantined hand-off: the clean one, recorded first, published nothing.
        #expect(requests.count == 1)
        let request = try #require(requests.first)
        #expect(request.event == "transfer.quarantined")
        #expect(request.signatureIsValid, "X-Airlock-Signature \(request.signature ?? "missing") does not sign the body")
        #expect(request.contentType == "application/json")
        let body = request.json
        #expect(body["event"] as? String == "transfer.quarantined")
        #expect(body["id"] as? String == request.delivery)
        #expect((body["at"] as? String)?.hasSuffix("Z") == true)
        let transfer = request.transfer
        #expect(transfer["id"] as? String == id)
        #expect(transfer["sender"] as? String == "alice@example.org")
        #expect(transfer["recipients"] as? [String] == ["carol@example.org"])
        #expect(transfer["downloadedBy"] as? [String] == [])
        #expect(transfer["filename"] as? String == "invoice.com")
        #expect(transfer["size"] as? Int == eicar.count)
        #expect(transfer["sha256"] as? String == Self.sha256(eicar))
        #expect(transfer["verdict"] as? String == "infected")
        #expect((transfer["signature"] as? String)?.uppercased().contains("EICAR") == true, "\(transfer)")
        #expect(transfer["signature"] as? String == held["signature"] as? String)
        #expect(transfer["state"] as? String == "quarantined")
        // A body changed in transit no longer verifies: the check above can fail.
        var tampered = request.body
        tampered[tampered.startIndex] = UInt8(ascii: " ")
        #expect(!WebhookReceiver.isValid(request.signature ?? "", body: tampered, secret: Self.secret))
    }

    @Test func releaseAndDeleteThroughTheCLIArePosted() async throws {
        let receiver = try await WebhookReceiver.start(secret: Self.secret)
        let fixture = try AdminFixture(extra: Self.environment(port: receiver.port))
        let server = try await fixture.startServer()
        let first = try #require(try await fixture.handOff(Fixtures.eicar, filename: "one.com", server: server)["id"] as? String)
        let second = try #require(try await fixture.handOff(Fixtures.eicar + Data("\n2".utf8), filename: "two.com", server: server)["id"] as? String)
        _ = try await receiver.requests(atLeast: 2)

        let released = try await fixture.airlock(["quarantine", "release", first, "--reason", "analyst approved", "--force"])
        #expect(released.status == 0, "\(released.standardError)")
        let deleted = try await fixture.airlock(["quarantine", "delete", second, "--reason", "malware"])
        #expect(deleted.status == 0, "\(deleted.standardError)")
        // The admin commands only write the outbox; the server finds their rows when it next reads it.
        let requests = try await receiver.requests(until: "4 accepted events") { Self.accepted($0).count >= 4 }
        #expect(await server.stopped() == 0)
        await receiver.stop()

        #expect(requests.allSatisfy { $0.signatureIsValid })
        let events = Self.accepted(requests).map { "\($0.event ?? "?") \(($0.transfer["id"] as? String) ?? "?")" }
        #expect(
            Set(events) == [
                "transfer.quarantined \(first)", "transfer.quarantined \(second)", "quarantine.released \(first)", "quarantine.deleted \(second)",
            ]
        )
        let release = try #require(Self.accepted(requests).first { $0.event == "quarantine.released" })
        #expect(release.transfer["state"] as? String == "released")
        #expect((release.json["details"] as? [String: String])?["reason"] == "analyst approved")
        let delete = try #require(Self.accepted(requests).first { $0.event == "quarantine.deleted" })
        #expect(delete.transfer["state"] as? String == "deleted")
        #expect((delete.json["details"] as? [String: String])?["reason"] == "malware")
    }

    /// Acceptance (issue 15): a receiver that is down for a while, and an Airlock restart in between: every event
    /// arrives afterwards, none twice with different ids, and one transfer's events in order.
    @Test func everyEventArrivesAfterAnOutageAndARestart() async throws {
        // Up but failing (503) at first, so a failed attempt can be awaited; then down altogether.
        let failing = try await WebhookReceiver.start(secret: Self.secret)
        failing.answer(with: 503)
        let port = failing.port
        let fixture = try AdminFixture(extra: Self.environment(port: port))
        let server = try await fixture.startServer()
        let first = try #require(try await fixture.handOff(Fixtures.eicar, filename: "one.com", server: server)["id"] as? String)
        // Two refused attempts: the second is a retry, made only after the first one's failure was recorded.
        let refused = try await failing.requests(atLeast: 2)
        await failing.stop()
        #expect(refused[0].delivery == refused[1].delivery)
        let failedAttempts = try await Self.metric("airlock_webhook_failed_attempts_total", fixture: fixture, server: server)
        #expect(failedAttempts >= 1)

        let released = try await fixture.airlock(["quarantine", "release", first, "--reason", "analyst approved", "--force"])
        #expect(released.status == 0, "\(released.standardError)")
        let second = try #require(try await fixture.handOff(Fixtures.eicar + Data("\n2".utf8), filename: "two.com", server: server)["id"] as? String)
        let deleted = try await fixture.airlock(["quarantine", "delete", second, "--reason", "malware"])
        #expect(deleted.status == 0, "\(deleted.standardError)")
        #expect(await server.stopped() == 0)

        // The receiver comes back where it was, then Airlock does.
        let receiver = try await WebhookReceiver.start(secret: Self.secret, port: port)
        let restarted = try await fixture.startServer()
        let requests = try await receiver.requests(until: "4 accepted events") { Self.accepted($0).count >= 4 }
        // The released event was posted after the quarantined one of its transfer was recorded as delivered.
        let delivered = try await Self.metric("airlock_webhook_deliveries_total", fixture: fixture, server: restarted)
        #expect(delivered >= 1)
        #expect(await restarted.stopped() == 0)
        await receiver.stop()

        let all = refused + requests
        #expect(all.allSatisfy { $0.signatureIsValid })
        let accepted = Self.accepted(requests)
        let events = accepted.map { "\($0.event ?? "?") \(($0.transfer["id"] as? String) ?? "?")" }
        #expect(events.count == 4)
        #expect(
            Set(events) == [
                "transfer.quarantined \(first)", "quarantine.released \(first)", "transfer.quarantined \(second)", "quarantine.deleted \(second)",
            ]
        )
        // Every attempt at one event carried one id: the refused first attempt and the accepted one alike.
        var ids: [String: Set<String>] = [:]
        for request in all {
            ids["\(request.event ?? "?") \((request.transfer["id"] as? String) ?? "?")", default: []].insert(request.delivery ?? "")
        }
        #expect(ids.count == 4)
        #expect(ids.values.allSatisfy { $0.count == 1 }, "\(ids)")
        #expect(refused.first?.delivery == accepted.first { $0.event == "transfer.quarantined" && $0.transfer["id"] as? String == first }?.delivery)
        // In order per transfer: nothing about a transfer was posted before its earlier event was accepted.
        for (transfer, later) in [(first, "quarantine.released"), (second, "quarantine.deleted")] {
            let acceptedAt = try #require(
                requests.firstIndex { $0.event == "transfer.quarantined" && $0.transfer["id"] as? String == transfer && $0.answeredStatus == 204 }
            )
            let laterAt = try #require(requests.firstIndex { $0.event == later })
            #expect(acceptedAt < laterAt)
        }
    }

    /// The value of an unlabelled metric in the server's `/metrics`.
    static func metric(_ name: String, fixture: AdminFixture, server: ServerProcess) async throws -> Double {
        let (status, body) = try await fixture.fetch("/metrics", server: server)
        #expect(status == "200")
        let text = String(decoding: body, as: UTF8.self)
        let line = try #require(text.split(separator: "\n").first { $0.hasPrefix(name + " ") }, "\(name) is not in /metrics:\n\(text)")
        return try #require(Double(line.split(separator: " ")[1]))
    }
}
