public import Foundation

/// Something webhooks are told about (DESIGN §10 names the events). Publish one with
/// ``Ledger/enqueueNotification(_:)`` on its own, or inside the transaction of the change it reports:
/// ``HandOffEntry/notifications`` for a hand-off, the `notify` closure of
/// ``Ledger/changeTransfer(id:event:notify:_:)`` for a change of state. The ledger writes one outbox row per
/// subscribed webhook in that same transaction, so an event is neither lost nor invented; the delivery service of
/// `airlock serve` posts it afterwards, at least once.
///
/// ```swift
/// // Inside the transaction that changes the transfer:
/// try await ledger.changeTransfer(id: id, event: audit, notify: { _ in [NotificationEvent(.transferRecalled, transferId: id, at: now)] }) { _ in
///     .setState(.quarantined)
/// }
/// // On its own (no transfer concerned):
/// try await ledger.enqueueNotification(.signaturesReloaded(version: "daily-27001", at: now))
/// ```
public struct NotificationEvent: Sendable, Equatable {
    /// The event names webhooks subscribe to.
    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// A hand-off was quarantined (infected, blocked or unscannable).
        case transferQuarantined = "transfer.quarantined"
        /// A transfer handed off clean was found bad later and quarantined.
        case transferRecalled = "transfer.recalled"
        /// An administrator released a quarantined transfer.
        case quarantineReleased = "quarantine.released"
        /// An administrator deleted a quarantined transfer.
        case quarantineDeleted = "quarantine.deleted"
        /// New signatures were loaded.
        case signaturesReloaded = "signatures.reloaded"
        /// Loading new signatures failed; the old ones stay.
        case signaturesReloadFailed = "signatures.reloadFailed"

        /// Whether the event concerns one transfer (its body then holds the transfer).
        public var concernsTransfer: Bool {
            switch self {
            case .transferQuarantined, .transferRecalled, .quarantineReleased, .quarantineDeleted: true
            case .signaturesReloaded, .signaturesReloadFailed: false
            }
        }
    }

    /// The event's unique id, sent as `X-Airlock-Delivery` on every attempt to every webhook.
    public var id: String
    /// What happened.
    public var kind: Kind
    /// When.
    public var at: Date
    /// The transfer concerned (transfer events): the ledger adds its fields, as they are after the change, to the body.
    public var transferId: String?
    /// Anything else the body should carry, as `details` (a release's reason; a reload's `version`, `error`, `file`).
    public var details: [String: String]

    /// Creates an event with a new unique id.
    public init(_ kind: Kind, transferId: String? = nil, at: Date, details: [String: String] = [:]) {
        self.id = UUID.random().uuidString.lowercased()
        self.kind = kind
        self.at = at
        self.transferId = transferId
        self.details = details
    }

    /// `signatures.reloaded`: the signatures of `version` now serve.
    public static func signaturesReloaded(version: String, at: Date, details: [String: String] = [:]) -> NotificationEvent {
        NotificationEvent(.signaturesReloaded, at: at, details: details.merging(["version": version]) { $1 })
    }

    /// `signatures.reloadFailed`: loading failed with `error` (in `file`, when one is to blame); `version` still serves.
    public static func signaturesReloadFailed(error: String, file: String?, version: String, at: Date) -> NotificationEvent {
        var details = ["error": error, "version": version]
        details["file"] = file
        return NotificationEvent(.signaturesReloadFailed, at: at, details: details)
    }
}
