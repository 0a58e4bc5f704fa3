import AirlockCore
import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import Prometheus
import ServiceLifecycle

/// Posts the notification outbox to the webhooks (README, "Notifications"): never on an upload's path, at least
/// once, in order per transfer and webhook.
///
/// It claims due rows from the ledger (leased to this node, so several nodes never post the same row at once),
/// posts each with its signature, and records the outcome: delivered on a 2xx answer, otherwise retried after a
/// wait that starts at one second and doubles up to `notifications.retryMaxSeconds`. It wakes at once when this
/// process enqueues a row, and every `notifications.pollSeconds` for rows that other processes enqueued. On
/// shutdown, requests in flight are cancelled and their rows released, to be posted again (with the same
/// `X-Airlock-Delivery`) after the next start.
struct WebhookDeliveryService: Service {
    let ledger: any Ledger
    let settings: AirlockConfiguration.Notifications
    let metrics: WebhookMetrics?
    let logger: Logger
    let now: @Sendable () -> Date

    /// Most rows posted at once.
    static let batchSize = 32
    /// How long delivered rows stay in the outbox (for `airlock ledger copy` and inspection) before they are removed.
    static let keepDelivered: TimeInterval = 7 * 86_400
    /// How often delivered rows are pruned.
    static let pruneInterval: TimeInterval = 3600

    /// Creates the service; `metrics` counts deliveries when given.
    init(
        ledger: any Ledger,
        settings: AirlockConfiguration.Notifications,
        metrics: WebhookMetrics? = nil,
        logger: Logger,
        now: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.ledger = ledger
        self.settings = settings
        self.metrics = metrics
        self.logger = logger
        self.now = now
    }

    func run() async throws {
        var configuration = HTTPClient.Configuration()
        // A webhook answers for itself: no redirect is followed.
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: .seconds(Int64(self.settings.timeoutSeconds)), read: .seconds(Int64(self.settings.timeoutSeconds)))
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        await self.releaseLeases()
        await cancelWhenGracefulShutdown {
            await self.deliverUntilCancelled(client)
        }
        await self.releaseLeases()
        try await client.shutdown()
    }

    /// Rows this node had leased when it stopped (or died) are posted again, not left until their lease runs out.
    private func releaseLeases() async {
        do {
            try await self.ledger.releaseNotificationLeases()
        } catch {
            self.logger.error(
                "cannot release this node's webhook deliveries; they resume once their lease has run out",
                metadata: ["error": "\(error)"]
            )
        }
    }

    private func deliverUntilCancelled(_ client: HTTPClient) async {
        let poll = Duration.seconds(self.settings.pollSeconds)
        var pruned = Date.distantPast
        while !Task.isCancelled {
            let webhooks = self.ledger.notifications.webhooks
            let start = self.now()
            if start.timeIntervalSince(pruned) >= Self.pruneInterval {
                pruned = start
                await self.prune(before: start.addingTimeInterval(-Self.keepDelivered))
            }
            let claim: OutboxClaim
            do {
                claim = try await self.ledger.claimNotifications(
                    webhooks: webhooks.map(\.url),
                    now: start,
                    leaseUntil: start.addingTimeInterval(Double(self.settings.timeoutSeconds + 30)),
                    limit: Self.batchSize
                )
            } catch {
                if Task.isCancelled { break }
                self.logger.error("cannot read the webhook outbox; trying again", metadata: ["error": "\(error)"])
                await self.ledger.notifications.waitForEnqueued(timeout: poll)
                continue
            }
            await self.updatePending(webhooks)
            guard !claim.deliveries.isEmpty else {
                var wait = poll
                if let due = claim.nextDue {
                    wait = min(poll, .milliseconds(max(10, Int64(due.timeIntervalSince(start) * 1000))))
                }
                await self.ledger.notifications.waitForEnqueued(timeout: wait)
                continue
            }
            // At most one row per webhook and transfer in a claim, so posting them together keeps each order.
            await withTaskGroup(of: Void.self) { group in
                for delivery in claim.deliveries {
                    guard let webhook = webhooks.first(where: { $0.url == delivery.webhook }) else { continue }
                    group.addTask { await self.deliver(delivery, to: webhook, client) }
                }
            }
        }
    }

    /// Removes rows delivered before `date`, so the outbox does not grow without end.
    private func prune(before date: Date) async {
        do {
            let count = try await self.ledger.pruneNotifications(deliveredBefore: date)
            if count > 0 { self.logger.info("removed delivered webhook events from the outbox", metadata: ["count": "\(count)"]) }
        } catch {
            if !Task.isCancelled { self.logger.error("cannot prune the webhook outbox; trying again later", metadata: ["error": "\(error)"]) }
        }
    }

    private func updatePending(_ webhooks: [AirlockConfiguration.Webhook]) async {
        guard let metrics = self.metrics else { return }
        guard !webhooks.isEmpty else { return metrics.pending.set(Int64(0)) }
        guard let pending = try? await self.ledger.pendingNotifications(webhooks: webhooks.map(\.url)) else { return }
        metrics.pending.set(Int64(pending))
    }

    /// One attempt: posts the row and records how it ended.
    private func deliver(_ delivery: OutboxDelivery, to webhook: AirlockConfiguration.Webhook, _ client: HTTPClient) async {
        var request = HTTPClientRequest(url: delivery.webhook)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "Airlock-Webhook/1")
        request.headers.add(name: "X-Airlock-Event", value: delivery.event)
        request.headers.add(name: "X-Airlock-Delivery", value: delivery.eventId)
        request.headers.add(name: WebhookSignature.header, value: WebhookSignature.sign(Data(delivery.payload.utf8), secret: webhook.secret))
        request.body = .bytes(ByteBuffer(string: delivery.payload))
        let failure: String?
        do {
            let response = try await client.execute(request, timeout: .seconds(Int64(self.settings.timeoutSeconds)))
            _ = try? await response.body.collect(upTo: 64 << 10)
            failure = (200..<300).contains(Int(response.status.code)) ? nil : "HTTP \(response.status.code)"
        } catch {
            // Shutting down: the row is released and posted again after the next start.
            if Task.isCancelled { return }
            failure = "\(error)"
        }
        let finished = self.now()
        let outcome: OutboxOutcome
        if let failure {
            let retryAt = finished.addingTimeInterval(Self.backoff(afterFailures: delivery.attempts + 1, max: self.settings.retryMaxSeconds))
            outcome = .failed(error: failure, retryAt: retryAt)
            self.metrics?.failedAttempts.increment()
            self.logger.warning(
                "a webhook did not accept an event; it is retried",
                metadata: ["webhook": "\(delivery.webhook)", "event": "\(delivery.event)", "delivery": "\(delivery.eventId)", "error": "\(failure)"]
            )
        } else {
            outcome = .delivered(at: finished)
            self.metrics?.delivered.increment()
        }
        do {
            // Recorded even while shutting down (a task of its own is not cancelled with this one): an event the
            // webhook accepted is not posted again after the restart.
            let ledger = self.ledger
            try await Task { try await ledger.completeNotification(id: delivery.id, outcome) }.value
        } catch {
            // The lease runs out and the row is posted again: at least once.
            self.logger.error("cannot record a webhook delivery", metadata: ["delivery": "\(delivery.eventId)", "error": "\(error)"])
        }
    }

    /// Seconds to wait after `failures` failed attempts: 1, 2, 4, … up to `max`.
    static func backoff(afterFailures failures: Int, max: Int) -> TimeInterval {
        let exponent = Swift.min(Swift.max(failures - 1, 0), 30)
        return TimeInterval(Swift.min(1 << exponent, max))
    }
}

/// The webhook delivery metrics in `/metrics`.
struct WebhookMetrics: Sendable {
    /// `airlock_webhook_deliveries_total`: events a webhook accepted.
    let delivered: Counter
    /// `airlock_webhook_failed_attempts_total`: attempts a webhook refused or did not answer.
    let failedAttempts: Counter
    /// `airlock_webhook_pending`: events not yet accepted.
    let pending: Gauge
}
