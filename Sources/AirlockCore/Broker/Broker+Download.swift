public import Foundation
import Logging

extension Broker {
    /// What a download may fetch, once authorised.
    public struct AuthorizedDownload: Sendable {
        /// The transfer.
        public var transfer: TransferRecord
        /// The recipient a token was minted for; nil for an XEP-0363 slot URL (a capability URL).
        public var recipient: String?
        /// The path of the clean bytes.
        public var path: String
    }

    /// How a recipient asks for a file.
    public enum DownloadCredential: Sendable {
        /// A download token (`/v1/files/{token}`); `consume` marks a single-use token used (GET, not HEAD).
        case token(String, consume: Bool)
        /// An XEP-0363 upload path (`{prefix}{slot}/{filename}`), percent-decoded.
        case slot(String)
    }

    /// The one download authorisation, for tokens and slot URLs alike: the credential, then the transfer's state.
    ///
    /// - Throws: ``BrokerError``: `invalidToken`, `tokenExpired` (also a used single-use token), `transferNotFound`
    ///   (also an unknown slot), `notARecipient`, `gone` (deleted or purged), `quarantined`.
    public func authorizeDownload(_ credential: DownloadCredential) async throws -> AuthorizedDownload {
        let transfer: TransferRecord
        var recipient: String?
        var tokenToConsume: String?
        switch credential {
        case .token(let token, let consume):
            let claims: DownloadTokenClaims
            do {
                claims = try self.tokens.verify(token, now: self.now())
            } catch .expired {
                throw BrokerError.tokenExpired("the download link expired: ask for a new one")
            } catch {
                throw BrokerError.invalidToken
            }
            guard let (record, recipients) = try await self.ledger.transfer(id: claims.tid) else {
                throw BrokerError.transferNotFound(claims.tid)
            }
            guard recipients.contains(claims.sub) else {
                throw BrokerError.notARecipient(claims.sub)
            }
            transfer = record
            recipient = claims.sub
            tokenToConsume = consume && self.configuration.tokens.singleUse ? claims.jti : nil
        case .slot(let path):
            guard let record = try await self.ledger.transfer(inSlot: path) else {
                throw BrokerError.transferNotFound(path)
            }
            transfer = record
        }
        switch transfer.state {
        case .deleted, .purged:
            throw BrokerError.gone(id: transfer.id, state: transfer.state)
        case .quarantined:
            throw BrokerError.quarantined(id: transfer.id, verdict: transfer.fullVerdict)
        case .stored, .released:
            break
        }
        if let tokenToConsume {
            guard try await self.ledger.consumeToken(id: tokenToConsume, at: self.now()) else {
                throw BrokerError.tokenExpired("this single-use download link was already used: ask for a new one")
            }
        }
        return AuthorizedDownload(transfer: transfer, recipient: recipient, path: self.store.cleanPath(sha256: transfer.sha256))
    }

    /// Records one served download.
    public func recordDownload(_ download: DownloadRecord) async {
        do {
            try await self.ledger.recordDownload(download)
        } catch {
            self.logger.error("cannot record a download", metadata: ["transfer": "\(download.transferId)", "error": "\(error)"])
        }
    }
}
