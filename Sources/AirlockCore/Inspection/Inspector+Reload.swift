public import Foundation
import Logging
import NIOPosix
import Synchronization

/// What a signature reload did (``Inspector/reload(_:force:)``).
public struct SignatureReload: Sendable {
    /// How it ended.
    public enum Outcome: Sendable, Equatable {
        /// Nothing that goes into an engine changed; nothing was loaded.
        case unchanged
        /// A new engine serves; `previous` is what it replaced.
        case reloaded(previous: SignatureInfo)
        /// The new signatures could not be loaded; the message names the file when libclamav did.
        case failed(String)
    }

    /// How it ended.
    public var outcome: Outcome
    /// The signatures that serve now.
    public var signatures: SignatureInfo
    /// When they finished compiling.
    public var loadedAt: Date
    /// How long the reload took (zero when unchanged).
    public var duration: Duration
}

/// The reload bookkeeping of an ``Inspector``.
struct ReloadState: Sendable {
    /// The configuration the serving generation was built with (its scanner and policy keys count).
    var configuration: AirlockConfiguration
    /// The signature files the serving generation was built from.
    var fingerprint: SignatureFingerprint
    /// The files of the last failed reload: not tried again until they change (or a reload is requested).
    var failedFingerprint: SignatureFingerprint?
    /// The last reload's error; nil once one succeeds.
    var lastError: String?
    var nextNumber = 2

    init(configuration: AirlockConfiguration, fingerprint: SignatureFingerprint) {
        self.configuration = configuration
        self.fingerprint = fingerprint
    }
}

/// The names, sizes, modification times and inodes of the signature files (what clamd's SelfCheck compares):
/// freshclam replaces a file by renaming a new one over it, which changes its inode even when nothing else does.
struct SignatureFingerprint: Sendable, Equatable {
    private var entries: [String]

    /// Lists `directories` now (missing or unreadable ones count as empty). Blocking.
    init(directories: [String]) {
        var entries: [String] = []
        let manager = FileManager.default
        for directory in directories {
            let names = ((try? manager.contentsOfDirectory(atPath: directory)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
            for name in names {
                let path = (directory as NSString).appendingPathComponent(name)
                guard let attributes = try? manager.attributesOfItem(atPath: path), attributes[.type] as? FileAttributeType == .typeRegular
                else { continue }
                let size = (attributes[.size] as? NSNumber)?.int64Value ?? -1
                let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
                let inode = (attributes[.systemFileNumber] as? NSNumber)?.uint64Value ?? 0
                entries.append("\(path)\u{0}\(size)\u{0}\(modified)\u{0}\(inode)")
            }
        }
        self.entries = entries
    }
}

extension Inspector {
    /// Calls `observer` each time a replaced generation of parsers has finished its last inspection.
    public func observeRetirements(_ observer: @escaping @Sendable () -> Void) {
        self.retirementObservers.withLock { $0.append(observer) }
    }

    /// Whether parsers serve (false only while a blocking reload compiles, or after one failed).
    public var isServing: Bool { self.slot.isServing }

    /// The last reload's error, nil when it succeeded (or none was tried).
    public var lastReloadError: String? {
        self.reloadState.withLock { $0.lastError }
    }

    /// Loads the signatures again when their files, or the scanner and policy keys of `configuration`, changed
    /// (always with `force`): a new generation of parsers is built and compiled beside the serving one, off the
    /// scan workers, then swapped in; inspections already running finish on the old one, which is shut down (and
    /// its engine freed) after the last. With `scanner.reloadMode` `"blocking"` the old generation is shut down
    /// first, and inspections that arrive meanwhile wait for the new one (at most `scanner.scanTimeoutSeconds`,
    /// then `unscannable`: never clean unscanned).
    ///
    /// A failed reload keeps the serving generation (in concurrent mode) and names the file libclamav refused;
    /// the same files are not tried again until they change. Reloads run one at a time.
    ///
    /// - Parameters:
    ///   - configuration: the configuration to build with; nil keeps the current one.
    ///   - force: build a new generation even when nothing changed.
    ///   - retryFailed: try files again that failed to load last time (an operator's request, not a periodic check).
    public func reload(_ configuration: AirlockConfiguration? = nil, force: Bool = false, retryFailed: Bool = false) async -> SignatureReload {
        do {
            return try await self.reloadPool.runIfActive { self.reloadBlocking(configuration, force: force, retryFailed: retryFailed) }
        } catch {
            let newest = self.slot.newest
            return SignatureReload(
                outcome: .failed("the broker is shutting down"),
                signatures: newest.signatures,
                loadedAt: newest.loadedAt,
                duration: .zero
            )
        }
    }

    private func reloadBlocking(_ requested: AirlockConfiguration?, force: Bool, retryFailed: Bool) -> SignatureReload {
        let started = ContinuousClock.now
        let state = self.reloadState.withLock { $0 }
        let configuration = requested ?? state.configuration
        let fingerprint = SignatureFingerprint(directories: configuration.scanner.signatureDirectories)
        let sameSettings =
            configuration.scanner.engineSettings == state.configuration.scanner.engineSettings && configuration.policy == state.configuration.policy
        let serving = self.slot.newest
        // Without serving parsers (a blocking reload failed) every check tries again.
        if !force, self.slot.isServing, sameSettings, fingerprint == state.fingerprint || (!retryFailed && fingerprint == state.failedFingerprint) {
            // The keys that only say when and how to reload (reloadMode, reloadCheckSeconds) count from now on.
            self.reloadState.withLock { $0.configuration = configuration }
            return SignatureReload(outcome: .unchanged, signatures: serving.signatures, loadedAt: serving.loadedAt, duration: .zero)
        }

        let number = state.nextNumber
        self.reloadState.withLock { $0.nextNumber += 1 }
        let blocking = configuration.scanner.reloadMode == .blocking
        if blocking, let old = self.slot.install(nil) {
            // Memory for one engine only: the old one goes before the new one compiles.
            old.stopReceiving()
            self.slot.drain(old)
            old.shutdown()
        }
        let next: ParserGeneration
        do {
            next = try Self.buildGeneration(
                number: number,
                configuration: configuration,
                scratchBase: self.scratchBase,
                observers: self.observers.withLock { $0 },
                logger: self.logger
            )
        } catch {
            let message = "\(error)"
            self.reloadState.withLock {
                $0.lastError = message
                $0.failedFingerprint = fingerprint
                // What was asked for (a new policy, say) is built with the next signatures that load.
                $0.configuration = configuration
            }
            self.logger.error(
                blocking
                    ? "signature reload failed; no engine serves until the signatures load (scanner.reloadMode blocking)"
                    : "signature reload failed; the previous signatures keep serving",
                metadata: ["error": "\(message)"]
            )
            let newest = self.slot.newest
            return SignatureReload(
                outcome: .failed(message),
                signatures: newest.signatures,
                loadedAt: newest.loadedAt,
                duration: started.duration(to: .now)
            )
        }
        let previous = self.slot.install(next)
        // Heads seen clean with the old signatures say nothing about the new ones.
        self.recentlyClean.withLock { $0.removeAll() }
        self.reloadState.withLock {
            $0.configuration = configuration
            $0.fingerprint = fingerprint
            $0.failedFingerprint = nil
            $0.lastError = nil
        }
        if let previous {
            self.retiring.enter()
            Thread.detachNewThread {
                previous.stopReceiving()
                self.slot.drain(previous)
                previous.shutdown()
                // Verdicts the old signatures gave after the swap are recorded by now: a retro-scan pass sees them.
                for observer in self.retirementObservers.withLock({ $0 }) { observer() }
                self.retiring.leave()
            }
        }
        self.logger.notice(
            "signatures reloaded",
            metadata: [
                "version": "\(next.signatures.version)", "signatures": "\(next.signatures.signatureCount)",
                "previous": "\(serving.signatures.version)",
            ]
        )
        return SignatureReload(
            outcome: .reloaded(previous: serving.signatures),
            signatures: next.signatures,
            loadedAt: next.loadedAt,
            duration: started.duration(to: .now)
        )
    }
}
