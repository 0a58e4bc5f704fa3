import Foundation
import NIOPosix
import Synchronization

/// Makes hand-offs durable together (group commit, `ledger.groupCommitMicroseconds`).
///
/// A hand-off ready to be recorded joins the pending group; the group is flushed when it is full or the window
/// since its first member has passed. A member's new clean file starts syncing as it joins, on an I/O pool sized
/// for waiting (so the filesystem can merge their journal commits, and the syncs overlap the window and the
/// previous group's commit). A flush waits for its members' syncs, then records every member in one ledger
/// transaction, each in its own savepoint: moving the bytes into the store inside it, syncing the directories
/// that gained entries, then committing (synced). Only then is each member answered. A member that fails (its
/// file cannot be synced, its slot is taken, its bytes cannot be moved) fails alone. Scan workers never wait for
/// the disk: they hand over and are free. Members are recorded in arrival order, so the audit chain keeps it.
final class GroupCommitter: Sendable {
    /// One hand-off waiting to be recorded.
    struct Member: Sendable {
        var entry: HandOffEntry
        /// Its staging file (moved into the store when clean).
        var stagingPath: String
        /// Whether its bytes must be synced before they are recorded (new clean content not yet synced).
        var needsSync: Bool
    }

    /// What the committer has done, for tests and metrics.
    struct Statistics: Sendable, Equatable {
        /// Groups committed.
        var groups = 0
        /// Hand-offs recorded or refused in them.
        var members = 0
        /// The largest group.
        var largestGroup = 0
    }

    private struct Pending {
        var member: Member
        /// The sync of its staging file, started when it joined (nil when it needs none).
        var sync: Task<Void, any Error>?
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var pending: [Pending] = []
        /// Whether a flush is running (one at a time, so groups commit in order).
        var flushing = false
        /// Whether a timer is waiting to flush the pending group.
        var timerArmed = false
        var statistics = Statistics()
    }

    private let ledger: any Ledger
    private let store: FileStore
    private let window: Duration
    private let maximumGroupSize: Int
    private let ioPool: NIOThreadPool
    private let state = Mutex(State())

    /// - Parameters:
    ///   - window: how long a group stays open after its first member arrives.
    ///   - maximumGroupSize: a group this large is flushed at once.
    ///   - ioPool: threads for syncing files (they wait on the disk; size it for concurrency, not cores).
    init(ledger: any Ledger, store: FileStore, window: Duration, maximumGroupSize: Int = 64, ioPool: NIOThreadPool) {
        self.ledger = ledger
        self.store = store
        self.window = window
        self.maximumGroupSize = maximumGroupSize
        self.ioPool = ioPool
    }

    var statistics: Statistics { self.state.withLock { $0.statistics } }

    /// Records `member` with the next group; returns once its group is durable.
    ///
    /// - Throws: what refused this member alone (``BrokerError/slotTaken(_:)``, a store error), or the group's
    ///   failure.
    func record(_ member: Member) async throws {
        let ioPool = self.ioPool
        let sync: Task<Void, any Error>? =
            member.needsSync
            ? Task { [path = member.stagingPath] in try await ioPool.runIfActive { try FileStore.syncFile(path) } } : nil
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let action = self.state.withLock { state -> Action in
                state.pending.append(Pending(member: member, sync: sync, continuation: continuation))
                return self.nextAction(&state)
            }
            self.perform(action)
        }
    }

    private enum Action {
        case none
        case armTimer
        case flush([Pending])
    }

    /// What to do after the pending group or the flushing flag changed (called with the lock held).
    private func nextAction(_ state: inout State, windowElapsed: Bool = false) -> Action {
        guard !state.flushing, !state.pending.isEmpty else { return .none }
        if state.pending.count >= self.maximumGroupSize || windowElapsed || self.window == .zero {
            state.flushing = true
            let group = Array(state.pending.prefix(self.maximumGroupSize))
            state.pending.removeFirst(group.count)
            return .flush(group)
        }
        guard !state.timerArmed else { return .none }
        state.timerArmed = true
        return .armTimer
    }

    private func perform(_ action: Action) {
        switch action {
        case .none:
            break
        case .armTimer:
            Task {
                // The group's window: the time others have to join it.
                try? await Task.sleep(for: self.window)
                let next = self.state.withLock { state -> Action in
                    state.timerArmed = false
                    return self.nextAction(&state, windowElapsed: true)
                }
                self.perform(next)
            }
        case .flush(let group):
            Task {
                await self.flush(group)
                let next = self.state.withLock { state -> Action in
                    state.flushing = false
                    state.statistics.groups += 1
                    state.statistics.members += group.count
                    state.statistics.largestGroup = max(state.statistics.largestGroup, group.count)
                    // Members that arrived during the flush: a full group goes at once, else their window runs.
                    return self.nextAction(&state, windowElapsed: !state.timerArmed && state.pending.count >= self.maximumGroupSize)
                }
                self.perform(next)
            }
        }
    }

    private func flush(_ group: [Pending]) async {
        // 1. New clean bytes on stable storage: their syncs started as the members joined, concurrently.
        var failures: [Int: any Error] = [:]
        for (index, pending) in group.enumerated() {
            do {
                try await pending.sync?.value
            } catch {
                failures[index] = error
            }
        }

        // 2. One transaction: each member moves its bytes into the store and writes its rows; the directories that
        //    gained entries are synced before the commit, which is synced too.
        let store = self.store
        let directories = Mutex(Set<String>())
        var members: [GroupMember] = []
        var indices: [Int] = []
        for (index, pending) in group.enumerated() where failures[index] == nil {
            let member = pending.member
            members.append(
                GroupMember(entry: member.entry) {
                    guard member.entry.verdict.isClean else { return }
                    // Synced above when it was new; if it became new since (its twin was deleted), synced here.
                    let stored = try store.storeClean(
                        stagingPath: member.stagingPath,
                        sha256: member.entry.transfer.sha256,
                        synced: member.needsSync,
                        syncDirectory: false
                    )
                    if let stored {
                        directories.withLock { $0.formUnion(stored.directoriesToSync) }
                    }
                }
            )
            indices.append(index)
        }
        var outcomes: [Int: Result<Void, any Error>] = failures.mapValues { .failure($0) }
        if !members.isEmpty {
            do {
                let results = try await self.ledger.recordHandOffs(members) {
                    let touched = Array(directories.withLock { $0 })
                    DispatchQueue.concurrentPerform(iterations: touched.count) { FileStore.syncDirectory(touched[$0]) }
                }
                for (index, result) in zip(indices, results) { outcomes[index] = result }
            } catch {
                for index in indices { outcomes[index] = .failure(error) }
            }
        }
        for (index, pending) in group.enumerated() {
            pending.continuation.resume(with: outcomes[index] ?? .success(()))
        }
    }
}
