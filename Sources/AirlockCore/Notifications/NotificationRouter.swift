import Foundation
import Synchronization

/// Which webhooks subscribe to which events (`notifications.webhooks`), as the ledger reads it when an event is
/// published, and the doorbell that wakes this process's delivery service when a transaction enqueued something.
///
/// One per ledger; ``update(_:)`` replaces the subscriptions (a configuration reload). Rows already enqueued keep
/// the webhooks they were written for.
public final class NotificationRouter: Sendable {
    private let subscriptions: Mutex<[AirlockConfiguration.Webhook]>
    private let doorbell = Doorbell()

    /// Routes to `webhooks`.
    public init(_ webhooks: [AirlockConfiguration.Webhook] = []) {
        self.subscriptions = Mutex(webhooks)
    }

    /// Replaces the subscriptions.
    public func update(_ webhooks: [AirlockConfiguration.Webhook]) {
        self.subscriptions.withLock { $0 = webhooks }
        self.doorbell.ring()
    }

    /// The configured webhooks.
    public var webhooks: [AirlockConfiguration.Webhook] { self.subscriptions.withLock { $0 } }

    /// The URLs of the webhooks subscribed to `kind`, in configuration order.
    func subscribers(of kind: NotificationEvent.Kind) -> [String] {
        self.subscriptions.withLock { $0.filter { $0.events.contains(kind) }.map(\.url) }
    }

    /// Tells the delivery service that rows were committed (call after the commit).
    func enqueued() {
        self.doorbell.ring()
    }

    /// Returns when rows were enqueued by this process since the last call, or after `timeout`, or when the task
    /// is cancelled, whichever comes first.
    public func waitForEnqueued(timeout: Duration) async {
        await self.doorbell.wait(timeout: timeout)
    }
}

/// A wake-up for one waiter: a ring while nobody waits is kept for the next wait.
private final class Doorbell: Sendable {
    private struct State {
        var rung = false
        var waiter: (id: UInt64, continuation: CheckedContinuation<Void, Never>)?
        var nextId: UInt64 = 0
    }

    private let state = Mutex(State())

    func ring() {
        let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.rung = true
                return nil
            }
            state.waiter = nil
            return waiter.continuation
        }
        waiter?.resume()
    }

    func wait(timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForRing() }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
    }

    private func waitForRing() async {
        let id = self.state.withLock { state -> UInt64 in
            state.nextId += 1
            return state.nextId
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = self.state.withLock { state -> Bool in
                    if state.rung {
                        state.rung = false
                        return true
                    }
                    if Task.isCancelled { return true }
                    // One waiter at a time (one delivery service per process): a previous one is let go.
                    let previous = state.waiter
                    state.waiter = (id, continuation)
                    if let previous { previous.continuation.resume() }
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
                guard let waiter = state.waiter, waiter.id == id else { return nil }
                state.waiter = nil
                return waiter.continuation
            }
            waiter?.resume()
        }
    }
}
