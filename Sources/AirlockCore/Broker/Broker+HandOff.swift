import Crypto
import LibMagic
import Logging
public import Foundation
public import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// What an IM server says about a file it hands off.
public struct HandOff: Sendable {
    /// The IM server's configured name (`xep0363` for XEP-0363 uploads).
    public var server: String
    /// The sender's address.
    public var sender: String
    /// The recipients' addresses.
    public var recipients: [String]
    /// The filename as given.
    public var filename: String
    /// The declared `Content-Type`.
    public var declaredType: String?
    /// The XEP-0363 upload path this upload claims, if it is one; claimed once, in the transfer's transaction.
    public var slot: String?

    /// Whether recipients must be named (XEP-0363 uploads are capability URLs without recipients).
    public var requiresRecipients: Bool { self.slot == nil }

    /// Creates a hand-off description.
    public init(server: String, sender: String, recipients: [String], filename: String, declaredType: String?, slot: String? = nil) {
        self.server = server
        self.sender = sender
        self.recipients = recipients
        self.filename = filename
        self.declaredType = declaredType
        self.slot = slot
    }
}

/// An upload's body once received (``Broker/receiveBody(_:length:declaredType:paced:)``).
public enum UploadBody: Sendable {
    /// Whole in memory: an announced length of at most ``Broker/inMemoryLimit``.
    case inMemory(ByteBuffer)
    /// In a staging file, with the inspection that started while it was received, if any.
    case staged(StagingFile, InspectionInProgress?)

    /// Gives up the body: its staging file removed, its inspection cancelled.
    public func discard() async {
        if case .staged(let staging, let inProgress) = self {
            staging.discard()
            await inProgress?.cancel()
        }
    }
}

/// What a hand-off produced: the recorded transfer, its recipients and, when clean, one download URL each.
public struct HandOffResult: Sendable {
    /// The transfer as recorded.
    public var transfer: TransferRecord
    /// Its recipients, sorted, without duplicates.
    public var recipients: [String]
    /// One download URL per recipient of a clean transfer; empty otherwise.
    public var downloads: [DownloadGrant]
}

extension Broker {
    /// Uploads up to this size are received in memory, hashed, then looked up in the verdict cache, inspected,
    /// planned and written to staging in one job on a scan worker: for them, thread hops would cost more than the
    /// work. Recording happens after the job (with its group, under group commit), so the worker never waits for
    /// the ledger's write lock or the disk.
    public static let inMemoryLimit = 64 << 10

    /// Checks a hand-off's parameters before any byte is read.
    ///
    /// - Returns: the filename to serve (the last path component).
    /// - Throws: ``BrokerError/invalidRequest(_:)``.
    public static func validate(_ handOff: HandOff) throws -> String {
        guard Self.isValidAddress(handOff.sender) else {
            throw BrokerError.invalidRequest("sender is missing or invalid: give the sender's address as ?sender=")
        }
        guard !handOff.recipients.isEmpty || !handOff.requiresRecipients else {
            throw BrokerError.invalidRequest("no recipient: give each recipient's address as ?recipient= (repeatable)")
        }
        guard handOff.recipients.count <= 1000 else {
            throw BrokerError.invalidRequest("too many recipients (at most 1000)")
        }
        for recipient in handOff.recipients where !Self.isValidAddress(recipient) {
            throw BrokerError.invalidRequest("recipient \"\(recipient.prefix(64))\" is invalid")
        }
        return try Filename.served(from: handOff.filename)
    }

    private static func isValidAddress(_ address: String) -> Bool {
        guard !address.isEmpty, address.utf8.count <= 3071 else { return false }
        // Printable ASCII, the usual case, is valid without looking up Unicode properties.
        if address.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) { return true }
        return !address.unicodeScalars.contains { $0.properties.generalCategory == .control || $0 == " " }
    }

    /// Checks an announced `Content-Length` against `limits.maxUploadBytes` before any byte is read.
    public func checkAnnouncedLength(_ length: Int) throws {
        let limit = self.configuration.limits.maxUploadBytes
        guard length <= limit else { throw BrokerError.tooLarge(limit: limit) }
    }

    /// Whether an XEP-0363 upload path still awaits its file (checked before the body is read; the hand-off's
    /// transaction claims it for good).
    public func checkSlotFree(_ path: String) async throws {
        guard try await self.ledger.transfer(inSlot: path) == nil else { throw BrokerError.slotTaken(path) }
    }

    /// Receives an upload's body, cutting it off with 413 past `limits.maxUploadBytes`.
    ///
    /// A body whose announced `length` is at most ``inMemoryLimit`` is kept in memory and must match it exactly.
    /// Any other is streamed into a new staging file, removed on any failure; when its `length` is announced, the
    /// inspection starts at once and reads the file as it grows.
    ///
    /// - Parameter paced: called with each chunk's size before it is kept; throws to cut off a slow body.
    public func receiveBody<Body: AsyncSequence>(
        _ body: Body,
        length: Int?,
        declaredType: String?,
        paced: (Int) throws -> Void
    ) async throws -> UploadBody where Body.Element == ByteBuffer {
        let limit = self.configuration.limits.maxUploadBytes
        if let length, length <= Self.inMemoryLimit {
            var collected = ByteBuffer()
            for try await buffer in body {
                try paced(buffer.readableBytes)
                guard collected.readableBytes + buffer.readableBytes <= length else {
                    throw BrokerError.invalidRequest("the body is longer than its Content-Length of \(length) bytes")
                }
                collected.writeImmutableBuffer(buffer)
            }
            guard collected.readableBytes == length else {
                throw BrokerError.invalidRequest("the body ended after \(collected.readableBytes) of the \(length) bytes its Content-Length announced")
            }
            return .inMemory(collected)
        }
        let staging = try StagingFile(path: self.store.newStagingPath(), expectedSize: length.map(Int64.init), threadPool: self.threadPool)
        let received = UploadBody.staged(staging, self.inspector.beginInspection(of: staging, declaredType: declaredType))
        do {
            for try await buffer in body {
                try paced(buffer.readableBytes)
                guard staging.size + Int64(buffer.readableBytes) <= Int64(limit) else {
                    throw BrokerError.tooLarge(limit: limit)
                }
                try await staging.append(buffer)
            }
        } catch {
            await received.discard()
            throw error
        }
        return received
    }

    /// The one hand-off: inspects a received upload (or reuses the verdict its bytes had), stores or quarantines
    /// it and records the transfer, its recipients, their download tokens, its XEP-0363 slot and its audit entry
    /// in one transaction. The body is consumed: moved into the store, encrypted into the quarantine, or removed.
    ///
    /// - Throws: ``BrokerError`` for a refused hand-off (``BrokerError/slotTaken(_:)`` when another upload claimed
    ///   the slot first, ``BrokerError/unavailable(_:)`` while shutting down); nothing is kept then.
    public func handOff(_ handOff: HandOff, body: UploadBody) async throws -> HandOffResult {
        let result: HandOffResult
        do {
            let filename = try Self.validate(handOff)
            switch body {
            case .inMemory(let contents):
                result = try await self.handOffInMemory(handOff, filename: filename, contents: contents)
            case .staged(let staging, let inProgress):
                result = try await self.handOffStaged(handOff, filename: filename, staging: staging, inProgress: inProgress)
            }
        } catch is NIOThreadPoolError.ThreadPoolInactive {
            await body.discard()
            throw BrokerError.unavailable("the broker is shutting down and takes no more uploads: send the file again")
        } catch {
            await body.discard()
            throw error
        }
        self.logger.info(
            "transfer received",
            metadata: [
                "transfer": "\(result.transfer.id)", "server": "\(result.transfer.server)", "size": "\(result.transfer.size)",
                "verdict": "\(result.transfer.verdict.rawValue)",
            ]
        )
        return result
    }

    /// A body in memory: hashed, then looked up in the verdict cache (a local ledger's inside the next job), inspected,
    /// planned and written to staging in one job on a scan worker (for small bodies, thread hops would cost more than
    /// the work), then recorded.
    private func handOffInMemory(_ handOff: HandOff, filename: String, contents: ByteBuffer) async throws -> HandOffResult {
        let sha256 = contents.withUnsafeReadableBytes { SHA256.hash(data: $0).hexString }
        let signatureVersion = self.inspector.signatures.version
        // A local ledger answers the verdict cache inside the worker's job; another one here, before it.
        let local = self.ledger.localVerdictCache
        let cachedBefore = local == nil ? try await self.ledger.cachedVerdict(sha256: sha256, signatureVersion: signatureVersion) : nil
        let store = self.store
        let (plan, stagingPath, synced) = try await self.inspector.runOnWorker {
            try contents.withUnsafeReadableBytes { bytes in
                let histogram = ByteHistogram(bytes)
                let cached = try cachedBefore ?? local?.cachedVerdictBlocking(sha256: sha256, signatureVersion: signatureVersion)
                let finding =
                    cached.map { self.finding(cached: $0, declaredType: handOff.declaredType) }
                    ?? Finding(
                        self.inspector.inspectSynchronously(bytes: bytes, declaredType: handOff.declaredType, sha256: sha256),
                        size: Int64(bytes.count)
                    )
                let plan = try self.plan(
                    handOff,
                    filename: filename,
                    size: Int64(bytes.count),
                    sha256: sha256,
                    finding: finding,
                    histogram: histogram,
                    signatureVersion: signatureVersion
                )
                // The bytes take the same way to the store as a streamed upload's: a staging file, synced only when
                // it becomes new clean content, moved into the store inside the ledger's transaction. The worker
                // only writes it (into the page cache); what waits for the disk runs below, off the scan worker.
                let stagingPath = store.newStagingPath()
                let sync = self.committer == nil && plan.isNewCleanContent(in: store)
                do {
                    try FileStore.writeStagingFile(stagingPath, bytes: bytes)
                } catch {
                    unlink(stagingPath)
                    throw error
                }
                return (plan, stagingPath, sync)
            }
        }
        // Scan workers never wait for the disk: without group commit new clean content is synced here, and unclean
        // bytes are encrypted into the quarantine (and synced there), on the I/O pool as for a streamed upload.
        // With group commit a clean upload has nothing to wait for here: its group syncs it.
        if synced || !plan.entry.verdict.isClean {
            do {
                try await self.threadPool.runIfActive {
                    if synced { try FileStore.syncFile(stagingPath) }
                    try self.quarantineIfUnclean(plan, stagingPath: stagingPath)
                }
            } catch {
                unlink(stagingPath)
                throw error
            }
        }
        try await self.record(plan, stagingPath: stagingPath, synced: synced)
        return plan.result
    }

    /// A body in a staging file: hashing finished, then the inspection that ran while it was received (or one now).
    private func handOffStaged(
        _ handOff: HandOff,
        filename: String,
        staging: StagingFile,
        inProgress: InspectionInProgress?
    ) async throws -> HandOffResult {
        let (size, sha256) = try await staging.finish()
        let signatureVersion = self.inspector.signatures.version
        let cached = try await self.ledger.cachedVerdict(sha256: sha256, signatureVersion: signatureVersion)
        let finding: Finding
        if let cached {
            await inProgress?.cancel()
            finding = self.finding(cached: cached, declaredType: handOff.declaredType)
        } else if let early = await inProgress?.report(), early.size == size {
            finding = Finding(early, size: size)
        } else {
            finding = Finding(await self.inspector.inspect(fileAt: staging.path, declaredType: handOff.declaredType, sha256: sha256), size: size)
        }
        let plan = try self.plan(
            handOff,
            filename: filename,
            size: size,
            sha256: sha256,
            finding: finding,
            histogram: staging.histogram,
            signatureVersion: signatureVersion
        )
        let store = self.store
        let path = staging.path
        let synced = try await self.threadPool.runIfActive {
            // New clean content is synced before the transaction (a repeat of stored bytes needs no sync: they are
            // dropped); if the content appears or vanishes meanwhile, storeClean syncs inside when it has to.
            // Unclean bytes are encrypted into the quarantine before the ledger's write lock is taken.
            // With group commit the file is synced with its group instead (one syncfs before the commit).
            let isNew = plan.isNewCleanContent(in: store)
            let sync = isNew && self.committer == nil
            if sync { try FileStore.syncFile(path) }
            try self.quarantineIfUnclean(plan, stagingPath: path)
            return sync
        }
        try await self.record(plan, stagingPath: path, synced: synced)
        return plan.result
    }

    /// The type and verdict of one upload.
    struct Finding {
        var detectedType: String?
        var typeDescription: String?
        var verdict: Verdict
        /// Whether the verdict came from the verdict cache.
        var cached: Bool
        /// Whether the scanner died or overran on these bytes (remembered for their digest).
        var scannerFailure: Bool
        /// The signatures that scanned them, when a scan ran (a reload may have swapped them since the verdict
        /// cache was asked).
        var signatureVersion: String?

        /// An inspection's finding; bytes that changed size while inspected are unscannable.
        init(_ report: InspectionReport, size: Int64) {
            self.detectedType = report.detectedType?.mimeType
            self.typeDescription = report.detectedType?.description
            self.verdict = report.size == size ? report.verdict : .unscannable(reason: "content changed while it was inspected")
            self.cached = false
            self.scannerFailure = report.scannerFailure && report.size == size
            self.signatureVersion = report.signatureVersion
        }

        init(detectedType: String?, typeDescription: String?, verdict: Verdict) {
            self.detectedType = detectedType
            self.typeDescription = typeDescription
            self.verdict = verdict
            self.cached = true
            self.scannerFailure = false
            self.signatureVersion = nil
        }
    }

    /// The type and verdict of bytes these signatures found clean before (only the policy runs again, since the
    /// declared type may differ), or on which the scanner died or overran (unscannable again, without a scan).
    private func finding(cached: VerdictCacheRecord, declaredType: String?) -> Finding {
        if let failure = cached.scannerFailure {
            // The scanner died or overran on these bytes with these signatures: not parsed again.
            return Finding(detectedType: cached.detectedType.isEmpty ? nil : cached.detectedType, typeDescription: nil, verdict: .unscannable(reason: failure))
        }
        let verdict: Verdict =
            self.inspector.policy.blockReason(declaredType: declaredType, detectedType: cached.detectedType)
            .map { .blocked(reason: $0) } ?? .clean
        return Finding(detectedType: cached.detectedType, typeDescription: cached.typeDescription.isEmpty ? nil : cached.typeDescription, verdict: verdict)
    }

    /// Everything a hand-off records, decided before anything is written.
    struct Plan: Sendable {
        var entry: HandOffEntry
        var result: HandOffResult

        /// Whether these bytes become new clean content (and so must be synced before they are recorded).
        func isNewCleanContent(in store: FileStore) -> Bool {
            self.entry.verdict.isClean && !store.hasClean(sha256: self.entry.transfer.sha256)
        }
    }

    private func plan(
        _ handOff: HandOff,
        filename: String,
        size: Int64,
        sha256: String,
        finding: Finding,
        histogram: ByteHistogram,
        signatureVersion: String
    ) throws -> Plan {
        let now = self.now()
        // Classed from the detected type (cached with a clean verdict) and the byte counts taken while hashing, so a
        // verdict from the cache gets the same class. A clean verdict held back by `policy.opaqueContent` is not
        // cached: the next upload of the same bytes is scanned again.
        let contentClass = ContentClass(detectedType: finding.detectedType, histogram: histogram)
        let verdict = contentClass.verdict(finding.verdict, policy: self.configuration.policy.opaqueContent)
        let transfer = TransferRecord(
            // Time-ordered: the ledger's indexes on transfer ids grow at their end (``UUID/timeOrdered(at:)``).
            id: UUID.timeOrdered(at: now).uuidString.lowercased(),
            server: handOff.server,
            sender: handOff.sender,
            filename: filename,
            originalFilename: handOff.filename,
            declaredType: handOff.declaredType,
            detectedType: finding.detectedType,
            typeDescription: finding.typeDescription,
            size: size,
            sha256: sha256,
            verdict: verdict.kind,
            signature: verdict.signature,
            reason: verdict.reason,
            state: verdict.isClean ? .stored : .quarantined,
            signatureVersion: finding.signatureVersion ?? signatureVersion,
            createdAt: now,
            updatedAt: now,
            node: self.configuration.node.id,
            contentClass: contentClass
        )
        let recipients = Array(Set(handOff.recipients)).sorted()
        var grants: [DownloadGrant] = []
        var issuances: [TokenIssuanceRecord] = []
        if transfer.state == .stored {
            for recipient in recipients {
                let (grant, issuance) = try self.transfers.mintDownload(transferId: transfer.id, recipient: recipient, now: now)
                grants.append(grant)
                issuances.append(issuance)
            }
        }
        return Plan(
            entry: HandOffEntry(
                transfer: transfer,
                recipients: recipients,
                issuances: issuances,
                verdict: verdict,
                cacheVerdict: (verdict.isClean || finding.scannerFailure) && !finding.cached,
                slot: handOff.slot,
                notifications: transfer.state == .quarantined ? [NotificationEvent(.transferQuarantined, transferId: transfer.id, at: now)] : [],
                quota: self.quotaCheck(for: handOff)
            ),
            result: HandOffResult(transfer: transfer, recipients: recipients, downloads: grants)
        )
    }

    /// Encrypts unclean bytes into the quarantine (before the ledger's write lock is taken). Blocks.
    private func quarantineIfUnclean(_ plan: Plan, stagingPath: String) throws {
        guard !plan.entry.verdict.isClean else { return }
        try self.store.quarantine(stagingPath: stagingPath, transferId: plan.entry.transfer.id)
    }

    /// Records the hand-off; clean bytes move into the store inside the ledger's transaction. All or nothing: on
    /// failure the staging file and any quarantine file are removed.
    /// - Parameters:
    ///   - synced: whether the staging file's bytes are already on stable storage.
    private func record(_ plan: Plan, stagingPath: String, synced: Bool) async throws {
        let store = self.store
        let entry = plan.entry
        do {
            if let committer = self.committer {
                let member = GroupCommitter.Member(entry: entry, stagingPath: stagingPath)
                return try await committer.record(member)
            }
            try await self.ledger.recordHandOff(entry) {
                if entry.verdict.isClean {
                    // Inside the write transaction, so a concurrent delete of the same content cannot interleave.
                    try store.storeClean(stagingPath: stagingPath, sha256: entry.transfer.sha256, synced: synced)
                }
            }
        } catch {
            unlink(stagingPath)
            if !entry.verdict.isClean {
                try? store.removeQuarantined(transferId: entry.transfer.id)
            }
            throw error
        }
    }
}
