import Foundation
import NIOPosix
import Synchronization

/// Makes hand-offs durable together (group commit, `ledger.groupCommitMicroseconds`).
///
/// A hand-off ready to be recorded joins the pending group; the group is flushed when it is full or the window
/// since its first member has passed. A flush records every member in one ledger transaction, each in its own
/// savepoint, moving its bytes into the store inside it; then one `syncfs` of the store's filesystem makes the
/// members' bytes and the directory entries that name them durable together (one flush of the disk for the group:
/// 14–42 % more uploads per second on this machine's disk than a sync per file and per directory), and only then
/// does the transaction commit, itself synced. Only then is each member answered. A member that fails (its slot is taken,
/// its bytes cannot be moved) fails alone; a failed `syncfs` fails the group, which then records nothing and removes
/// the files it put into the store (their bytes are not known to be on disk, and a later upload of the same content
/// must store and sync its own rather than find them). Scan workers never wait for the disk: they hand over and are
/// free. Members are recorded in arrival order, so the audit chain keeps it.
final class GroupCommitter: Sendable {
    /// One hand-off waiting to be recorded.
    struct Member: Sendable {
        var entry: HandOffEntry
        /// Its staging file (moved into the store when clean; quarantined bytes were synced when encrypted).
        var stagingPath: String
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
    private let syncFilesystem: @Sendable (String) throws -> Void
    private let state = Mutex(State())

    /// - Parameters:
    ///   - window: how long a group stays open after its first member arrives.
    ///   - maximumGroupSize: a group this large is flushed at once.
    ///   - syncFilesystem: makes the filesystem holding the given directory durable (`syncfs`); tests pass one that
    ///     fails.
    init(
        ledger: any Ledger,
        store: FileStore,
        window: Duration,
        maximumGroupSize: Int = 64,
        syncFilesystem: @escaping @Sendable (String) throws -> Void = { try FileStore.syncFilesystem(containing: $0) }
    ) {
        self.ledger = ledger
        self.store = store
        self.window = window
        self.maximumGroupSize = maximumGroupSize
        self.syncFilesystem = syncFilesystem
    }

    var statistics: Statistics { self.state.withLock { $0.statistics } }

    /// Records `member` with the next group; returns once its group is durable.
    ///
    /// - Throws: what refused this member alone (``BrokerError/slotTaken(_:)``, a store error), or the group's
    ///   failure.
    func record(_ member: Member) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let action = self.state.withLock { state -> Action in
                state.pending.append(Pending(member: member, continuation: continuation))
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
                    // Members that arrived during the flush: a full group goes at once, else their window runs.
                    return self.nextAction(&state, windowElapsed: !state.timerArmed && state.pending.count >= self.maximumGroupSize)
                }
                self.perform(next)
            }
        }
    }

    private func flush(_ group: [Pending]) async {
        // One transaction: each member moves its bytes into the store and writes its rows; before the commit, one
        // syncfs of the store's filesystem when any member stored new bytes (quarantined bytes were synced when
        // they were encrypted; bytes already stored were durable before).
        let store = self.store
        // The files this group put into the store (members refused after their move included).
        let storedNew = Mutex([String]())
        let members = group.map { pending in
            let member = pending.member
            return GroupMember(entry: member.entry) {
                guard member.entry.verdict.isClean else { return }
                // `synced: true` skips the file's own fsync: the group's syncfs below makes the bytes and their name
                // durable together.
                let stored = try store.storeClean(
                    stagingPath: member.stagingPath,
                    sha256: member.entry.transfer.sha256,
                    synced: true,
                    syncDirectory: false
                )
                if stored != nil { storedNew.withLock { $0.append(store.cleanPath(sha256: member.entry.transfer.sha256)) } }
            }
        }
        var outcomes: [Result<Void, any Error>]
        let filesDirectory = store.filesDirectory
        let syncFilesystem = self.syncFilesystem
        let syncFailed = Mutex(false)
        do {
            outcomes = try await self.ledger.recordHandOffs(members) {
                let newFiles = storedNew.withLock { $0 }
                guard !newFiles.isEmpty else { return }
                do {
                    try syncFilesystem(filesDirectory)
                } catch {
                    syncFailed.withLock { $0 = true }
                    // The group records nothing, and its new files' bytes are not known to be on disk (a second
                    // syncfs would not report the same write-back error again). Removed while the transaction still
                    // holds the content (the write lock; PostgreSQL's content locks): no other hand-off has seen
                    // them, and a later one with the same bytes stores and syncs its own instead of finding these.
                    for path in newFiles { unlink(path) }
                    throw error
                }
            }
        } catch {
            outcomes = Array(repeating: .failure(error), count: group.count)
            // The group failed elsewhere than at its syncfs (the database, the connection, the commit): the files it
            // moved into the store are named by no row, the locks that covered them are gone, and a later hand-off of
            // the same bytes would find them and skip the sync. So they are synced now, before the next group can
            // start; if that fails too, they stay until start-up's orphan clean-up, and a hand-off that finds one
            // meanwhile is not known to be durable (the disk is failing then: every sync reports errors).
            if !storedNew.withLock({ $0.isEmpty }), !syncFailed.withLock({ $0 }) {
                try? await NIOThreadPool.singleton.runIfActive { try syncFilesystem(filesDirectory) }
            }
        }
        // Counted before anyone is answered, so that a member that returns sees its group counted.
        self.state.withLock { state in
            state.statistics.groups += 1
            state.statistics.members += group.count
            state.statistics.largestGroup = max(state.statistics.largestGroup, group.count)
        }
        for (pending, outcome) in zip(group, outcomes) {
            pending.continuation.resume(with: outcome)
        }
    }
}
