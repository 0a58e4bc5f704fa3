import Foundation
import Synchronization

/// The parsers built from one state of the signature files and one policy: what a reload replaces whole.
///
/// Every inspection leases the generation that is current when it starts and keeps it to the end, so a reload
/// never changes the engine under a running scan; the old generation is shut down after its last lease ends.
final class ParserGeneration: Sendable {
    /// 1 for the engine loaded at start-up, then one more per reload.
    let number: Int
    /// Where the parsers run.
    let host: ParserHost
    /// The signatures this generation loaded.
    let signatures: SignatureInfo
    /// The type policy it judges with.
    let policy: TypePolicy
    /// `scanner.maxFileSize` as it was when it was built.
    let maxFileSize: Int
    /// When its signatures finished compiling.
    let loadedAt: Date
    /// Scratch directories made for this generation alone, removed once it is shut down.
    let scratchDirectories: [String]
    /// Inspections reading an upload while it is received: a slow sender must not keep a retired generation (and its
    /// engine's memory, or in blocking mode every other upload) waiting, so retiring stops them; their uploads are
    /// inspected after their last byte by the generation that serves then.
    private let receiving = Mutex<(retired: Bool, scans: [ObjectIdentifier: (StopSignal, StagingProgress)])>((false, [:]))

    init(number: Int, host: ParserHost, signatures: SignatureInfo, policy: TypePolicy, maxFileSize: Int, loadedAt: Date, scratchDirectories: [String])
    {
        self.number = number
        self.host = host
        self.signatures = signatures
        self.policy = policy
        self.maxFileSize = maxFileSize
        self.loadedAt = loadedAt
        self.scratchDirectories = scratchDirectories
    }

    /// Records an inspection reading an upload while it is received; false when the generation is retired already.
    func register(_ stop: StopSignal, _ progress: StagingProgress) -> Bool {
        self.receiving.withLock { state in
            guard !state.retired else { return false }
            state.scans[ObjectIdentifier(stop)] = (stop, progress)
            return true
        }
    }

    func unregister(_ stop: StopSignal) {
        self.receiving.withLock { _ = $0.scans.removeValue(forKey: ObjectIdentifier(stop)) }
    }

    /// Stops the inspections still reading uploads as they are received (the generation no longer serves).
    func stopReceiving() {
        let scans = self.receiving.withLock { state in
            state.retired = true
            return Array(state.scans.values)
        }
        for (stop, progress) in scans {
            stop.stop()
            progress.wakeWaiters()
        }
    }

    /// Stops its scanner processes (if any) and removes its scratch directories; blocks. With isolation off, the
    /// engine is freed when the last reference to its ``Parsers`` goes.
    func shutdown() {
        if case .isolated(let supervisors) = self.host {
            supervisors.forEach { $0.shutdown() }
        }
        for directory in self.scratchDirectories {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }
}

/// The current ``ParserGeneration`` and the leases on every generation still in use. Blocking: call it from
/// threads of their own (scan workers, the reload thread), never from Swift's cooperative pool.
final class GenerationSlot: @unchecked Sendable {
    // Invariant that makes this Sendable: every stored property is read and written with `condition` locked.
    private let condition = NSCondition()
    private var current: ParserGeneration?
    /// The signatures of the generation that is current, or of the last one while a blocking reload runs.
    private var latest: ParserGeneration
    private var leases: [Int: Int] = [:]

    init(_ first: ParserGeneration) {
        self.current = first
        self.latest = first
    }

    /// The generation that serves now, or the one a blocking reload is replacing.
    var newest: ParserGeneration {
        self.condition.lock()
        defer { self.condition.unlock() }
        return self.latest
    }

    /// Whether a generation serves (false only while a blocking reload compiles, or after one failed).
    var isServing: Bool {
        self.condition.lock()
        defer { self.condition.unlock() }
        return self.current != nil
    }

    /// Takes a lease on the current generation, waiting while a blocking reload has none (until `deadline`); nil
    /// when the deadline passed. Every lease must be given back with ``release(_:)``.
    func acquire(until deadline: Date) -> ParserGeneration? {
        self.condition.lock()
        defer { self.condition.unlock() }
        while self.current == nil {
            guard self.condition.wait(until: deadline) || self.current != nil else { return nil }
        }
        let generation = self.current!
        self.leases[generation.number, default: 0] += 1
        return generation
    }

    /// Gives a lease back.
    func release(_ generation: ParserGeneration) {
        self.condition.lock()
        defer { self.condition.unlock() }
        let remaining = (self.leases[generation.number] ?? 1) - 1
        self.leases[generation.number] = remaining > 0 ? remaining : nil
        if remaining <= 0 { self.condition.broadcast() }
    }

    /// Runs `body` under a lease on the current generation; `unavailable` when none comes before `deadline`.
    func withGeneration<Result>(until deadline: Date, unavailable: () -> Result, _ body: (ParserGeneration) -> Result) -> Result {
        guard let generation = self.acquire(until: deadline) else { return unavailable() }
        defer { self.release(generation) }
        return body(generation)
    }

    /// Makes `next` current (nil: none, while a blocking reload compiles) and returns the one it replaces.
    @discardableResult
    func install(_ next: ParserGeneration?) -> ParserGeneration? {
        self.condition.lock()
        defer { self.condition.unlock() }
        let previous = self.current
        self.current = next
        if let next { self.latest = next }
        self.condition.broadcast()
        return previous
    }

    /// Waits until no lease on `generation` is left (it must no longer be current).
    func drain(_ generation: ParserGeneration) {
        self.condition.lock()
        defer { self.condition.unlock() }
        while (self.leases[generation.number] ?? 0) > 0 {
            self.condition.wait()
        }
    }
}
