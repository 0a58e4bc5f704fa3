public import Foundation
public import GRDB

/// Where a transfer's bytes stand.
public enum TransferState: String, Sendable, Codable, CaseIterable, DatabaseValueConvertible {
    /// Clean and downloadable.
    case stored
    /// Not clean: held, encrypted, in the quarantine.
    case quarantined
    /// Released from quarantine by an administrator: downloadable.
    case released
    /// Retracted by the sender or deleted by an administrator: bytes gone, row kept.
    case deleted
    /// Removed by the retention policy: bytes gone, row kept.
    case purged

    /// Whether recipients may download the transfer.
    public var isDownloadable: Bool { self == .stored || self == .released }
}

extension Verdict.Kind: DatabaseValueConvertible {}

/// One row of the `transfer` table: a file handed off by an IM server.
public struct TransferRecord: Sendable, Equatable, Codable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "transfer"

    /// Random identifier (UUID).
    public var id: String
    /// The handing-off IM server's name from `servers`.
    public var server: String
    /// The sender's address (JID).
    public var sender: String
    /// The filename served to recipients: the last path component of `originalFilename`.
    public var filename: String
    /// The filename exactly as handed off.
    public var originalFilename: String
    /// The `Content-Type` the sender declared.
    public var declaredType: String?
    /// The MIME type libmagic detected.
    public var detectedType: String?
    /// libmagic's description.
    public var typeDescription: String?
    /// Size in bytes.
    public var size: Int64
    /// SHA-256 of the content, lowercase hex.
    public var sha256: String
    /// The verdict kind.
    public var verdict: Verdict.Kind
    /// The matched signature, for `infected`.
    public var signature: String?
    /// Why, for `blocked` and `unscannable`.
    public var reason: String?
    /// Where the bytes stand.
    public var state: TransferState
    /// The signature database version that gave the verdict.
    public var signatureVersion: String
    /// When the transfer was handed off.
    public var createdAt: Date
    /// When the row last changed.
    public var updatedAt: Date
    /// The node (`node.id`) that received it; nil for transfers from before nodes were recorded.
    public var node: String? = nil
    /// Whether the inspection could see the content (``ContentClass``); `inspected` for transfers from before it was
    /// recorded.
    public var contentClass: ContentClass = .inspected
    /// When a retro-scan found the content no longer clean after it was handed off clean (issue 15); nil otherwise.
    public var recalledAt: Date? = nil

    /// The verdict with its signature or reason.
    public var fullVerdict: Verdict {
        switch self.verdict {
        case .clean: .clean
        case .infected: .infected(signature: self.signature ?? "unknown")
        case .blocked: .blocked(reason: self.reason ?? "unknown")
        case .unscannable: .unscannable(reason: self.reason ?? "unknown")
        }
    }

    /// The rows of `transferRecipient` for this transfer.
    public static let recipients = hasMany(RecipientRecord.self, using: ForeignKey(["transferId"]))
}

/// One row of `transferRecipient`.
public struct RecipientRecord: Sendable, Equatable, Codable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "transferRecipient"
    /// The transfer.
    public var transferId: String
    /// A recipient's address (JID).
    public var recipient: String
}

/// One row of `download`: every download attempt that reached a transfer.
public struct DownloadRecord: Sendable, Equatable, Codable, FetchableRecord, MutablePersistableRecord {
    public static let databaseTableName = "download"
    /// Row id.
    public var id: Int64?
    /// The transfer.
    public var transferId: String
    /// The recipient the token was bound to, when known.
    public var recipient: String?
    /// When.
    public var at: Date
    /// The client's address.
    public var remoteAddress: String?
    /// Bytes sent.
    public var bytes: Int64
    /// HTTP status answered.
    public var status: Int

    /// Creates a download row.
    public init(transferId: String, recipient: String?, at: Date, remoteAddress: String?, bytes: Int64, status: Int) {
        self.transferId = transferId
        self.recipient = recipient
        self.at = at
        self.remoteAddress = remoteAddress
        self.bytes = bytes
        self.status = status
    }

    public mutating func didInsert(_ inserted: InsertionSuccess) {
        self.id = inserted.rowID
    }
}

/// One row of `tokenIssuance`: a download token minted for a recipient.
public struct TokenIssuanceRecord: Sendable, Equatable, Codable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "tokenIssuance"
    /// The token's unique id (`jti`).
    public var tokenId: String
    /// The transfer.
    public var transferId: String
    /// The recipient it is bound to.
    public var recipient: String
    /// The signing key id.
    public var keyId: String
    /// When it was minted.
    public var issuedAt: Date
    /// When it expires.
    public var expiresAt: Date
    /// When it was used, for single-use tokens.
    public var usedAt: Date?
}

/// One row of `verdictCache`: a clean verdict for content, or the scanner's failure on it (a crash or an overrun,
/// so the same bytes cannot crash it again), valid while the signature version is unchanged.
public struct VerdictCacheRecord: Sendable, Equatable, Codable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "verdictCache"
    /// SHA-256 of the content.
    public var sha256: String
    /// The signature database version that found it clean.
    public var signatureVersion: String
    /// The detected MIME type, so the policy can be applied again to a new declared type.
    public var detectedType: String
    /// libmagic's description.
    public var typeDescription: String
    /// When it was cached.
    public var createdAt: Date
    /// Nil for a clean verdict; else why the scanner could not inspect the content (the unscannable reason).
    public var scannerFailure: String? = nil
}

/// One row of `uploadSlot`: an XEP-0363 upload path and the transfer stored under it.
public struct UploadSlotRecord: Sendable, Equatable, Codable, FetchableRecord, PersistableRecord {
    public static let databaseTableName = "uploadSlot"
    /// The path after the prefix, percent-decoded (`slot/filename`).
    public var path: String
    /// The transfer.
    public var transferId: String
    /// When the slot was filled.
    public var createdAt: Date
}
