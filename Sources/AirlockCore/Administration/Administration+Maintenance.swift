import Crypto
public import Foundation

extension Administration {
    /// A transfer whose bytes the retention policy removes.
    public struct PurgeItem: Sendable, Equatable {
        /// The transfer.
        public var id: String
        /// Its state before the purge.
        public var state: TransferState
        /// When it was handed off.
        public var createdAt: Date
        /// Its size.
        public var size: Int64
    }

    /// What ``purge(dryRun:)`` did (or would do).
    public struct PurgeReport: Sendable, Equatable {
        /// The transfers whose bytes went.
        public var items: [PurgeItem]
        /// Per-day upload counters of days before yesterday (UTC) removed: daily quotas only read today's.
        public var dailyQuotaCounters: Int
    }

    /// Applies `retention.cleanDays` and `retention.quarantineDays`: bytes removed, rows kept as `purged`. Then
    /// removes the per-day upload counters of days before yesterday (UTC), which no daily quota reads again (a
    /// day's grace for a node whose clock lags), so the ledger does not grow by a row per uploader and day forever.
    ///
    /// Safe while the server runs: each transfer is purged in its own write transaction, and clean bytes are
    /// kept while another live transfer shares them.
    public func purge(dryRun: Bool) async throws -> PurgeReport {
        let now = self.now
        let retention = self.transferService.configuration.retention
        let due = try await self.ledger.purgeCandidates(
            cleanBefore: now.addingTimeInterval(-Double(retention.cleanDays) * 86400),
            quarantineBefore: now.addingTimeInterval(-Double(retention.quarantineDays) * 86400)
        )
        let items = due.map { PurgeItem(id: $0.id, state: $0.state, createdAt: $0.createdAt, size: $0.size) }
        // Never past the real day: a `--now` in the future must not reset today's daily quotas.
        let counterDays = QuotaDay.of(min(now, Date())) - 1
        guard !dryRun else {
            return PurgeReport(items: items, dailyQuotaCounters: try await self.ledger.pruneDailyQuotaUsage(before: counterDays, dryRun: true))
        }
        for record in due {
            let event = AuditEvent(
                at: now,
                actor: self.actor,
                action: "transfer.purged",
                transferId: record.id,
                details: ["previousState": record.state.rawValue, "policy": record.state == .quarantined ? "quarantineDays" : "cleanDays"]
            )
            // Skipped when its state changed since it was listed (released, deleted meanwhile).
            let purged = try await self.ledger.changeTransfer(id: record.id, event: event) { current in
                current.state == record.state ? .setState(.purged) : .skip
            }
            if purged != nil {
                try await self.transferService.removeBytes(of: record)
            }
        }
        return PurgeReport(items: items, dailyQuotaCounters: try await self.ledger.pruneDailyQuotaUsage(before: counterDays, dryRun: false))
    }

    /// A disagreement between ledger and disk.
    public struct DoctorProblem: Sendable, Equatable, CustomStringConvertible {
        /// The kind of problem.
        public enum Kind: String, Sendable, Codable {
            case missingBytes = "missing-bytes"
            case wrongHash = "wrong-hash"
            case orphanFile = "orphan-file"
            case staleStaging = "stale-staging"
            case unreadableQuarantine = "unreadable-quarantine"
        }
        /// The kind.
        public var kind: Kind
        /// The file concerned.
        public var path: String
        /// The transfer concerned, if any.
        public var transferId: String?
        /// What is wrong and what to do.
        public var detail: String

        public var description: String { "\(self.kind.rawValue): \(self.path): \(self.detail)" }
    }

    /// Staging files not written to for this long are stale (a live upload keeps writing).
    public static let stagingStaleAfter: TimeInterval = FileStore.inFlightGrace

    /// Checks that ledger and disk agree: every stored or released transfer's bytes exist with the recorded
    /// SHA-256, every quarantined transfer's encrypted file exists and is Airlock's format, no file in the store
    /// or quarantine lacks a row, and no staging file is stale.
    ///
    /// - Parameter progress: called with (checked, total) as clean files are hashed.
    public func doctor(progress: (Int, Int) -> Void = { _, _ in }) async throws -> [DoctorProblem] {
        let records = try await self.ledger.transfers(inStates: [.stored, .released, .quarantined])
        let store = self.store
        var problems: [DoctorProblem] = []
        var expectedClean: [String: String] = [:]
        var expectedQuarantine: Set<String> = []
        for record in records {
            if record.state == .quarantined {
                expectedQuarantine.insert(store.quarantinePath(transferId: record.id))
            } else {
                expectedClean[store.cleanPath(sha256: record.sha256)] = record.id
            }
        }

        var checked = 0
        for (path, id) in expectedClean.sorted(by: { $0.key < $1.key }) {
            checked += 1
            progress(checked, expectedClean.count)
            guard FileManager.default.fileExists(atPath: path) else {
                problems.append(DoctorProblem(kind: .missingBytes, path: path, transferId: id, detail: "the ledger says stored, the bytes are gone"))
                continue
            }
            let expected = (path as NSString).lastPathComponent
            if let actual = try? Self.sha256(ofFileAt: path), actual != expected {
                problems.append(DoctorProblem(kind: .wrongHash, path: path, transferId: id, detail: "content hashes to \(actual)"))
            }
        }
        for path in expectedQuarantine.sorted() {
            let id = (path as NSString).lastPathComponent
            guard FileManager.default.fileExists(atPath: path) else {
                problems.append(
                    DoctorProblem(kind: .missingBytes, path: path, transferId: id, detail: "the ledger says quarantined, the bytes are gone")
                )
                continue
            }
            if !FileStore.isQuarantineFile(path) {
                problems.append(DoctorProblem(kind: .unreadableQuarantine, path: path, transferId: id, detail: "not an encrypted quarantine file"))
            }
        }
        // On a shared ledger, files younger than the grace may be another node's upload in flight.
        let grace = self.transferService.orphanGrace
        let now = Date()
        for path in FileStore.regularFiles(under: store.filesDirectory) where expectedClean[path] == nil && FileStore.age(of: path, now: now) >= grace {
            problems.append(DoctorProblem(kind: .orphanFile, path: path, transferId: nil, detail: "no stored or released transfer has these bytes"))
        }
        for path in FileStore.regularFiles(under: store.quarantineDirectory)
        where !expectedQuarantine.contains(path) && FileStore.age(of: path, now: now) >= grace {
            let name = (path as NSString).lastPathComponent
            if name == ".gitkeep" { continue }
            problems.append(DoctorProblem(kind: .orphanFile, path: path, transferId: nil, detail: "no quarantined transfer owns this file"))
        }
        // Every node's staging directory: a file nobody has written to for 15 minutes is no upload in flight.
        for path in FileStore.regularFiles(under: store.stagingRoot) {
            let modified = (try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date) ?? .distantPast
            if now.timeIntervalSince(modified) > Self.stagingStaleAfter {
                problems.append(
                    DoctorProblem(
                        kind: .staleStaging,
                        path: path,
                        transferId: nil,
                        detail: "an upload that never finished; the server removes it at start-up"
                    )
                )
            }
        }
        return problems
    }

    static func sha256(ofFileAt path: String) throws -> String {
        let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        var hasher = SHA256()
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            hasher.update(data: chunk)
        }
        return hasher.finalize().hexString
    }
}
