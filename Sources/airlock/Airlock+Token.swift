import AirlockCore
import ArgumentParser
import Foundation

extension Airlock {
    /// `airlock token issue`.
    struct Token: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Mint download URLs.", subcommands: [Issue.self])

        struct Issue: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Mint a download URL for a recipient of a downloadable transfer.",
                discussion: "The issuance is recorded in the audit log (token.issued) with the recipient and the expiry."
            )

            @OptionGroup var options: AdminOptions
            @Argument(help: "The transfer id.") var transferId: String
            @Option(help: "The recipient the URL is for (one of the transfer's recipients).") var recipient: String
            @Option(help: "Lifetime in seconds (default tokens.ttlSeconds).") var ttl: Int?

            func validate() throws {
                if let ttl, !(1...(7 * 86400)).contains(ttl) {
                    throw ValidationError("--ttl must be between 1 and 604800 seconds.")
                }
            }

            func run() async throws {
                let (admin, _, _) = try await self.options.open()
                let grant = try await admin.issueDownload(transferId: self.transferId, recipient: self.recipient, ttlSeconds: self.ttl)
                if self.options.json {
                    try self.options.printJSON(TransferDocument.Download(recipient: grant.recipient, url: grant.url, expiresAt: grant.expiresAt))
                } else {
                    print(grant.url)
                    print("for \(grant.recipient), valid until \(Output.time(grant.expiresAt))")
                }
            }
        }
    }
}
