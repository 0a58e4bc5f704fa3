import AirlockTestSupport
import Foundation
import GRDB
import Testing

@testable import AirlockCore

/// The hand-off's hot path writes its rows through cached statements and its JSON by hand; both must give exactly
/// what GRDB's records and Foundation's encoder give.
@Suite("hand-off encoding")
struct HandOffEncodingTests {
    static let created = Date(timeIntervalSince1970: 1_795_334_472.987)

    static func record(id: String, verdict: Verdict.Kind = .clean, signature: String? = nil) -> TransferRecord {
        TransferRecord(
            id: id,
            server: "prosody",
            sender: "alice@example.org",
            filename: "notes.txt",
            originalFilename: "dir/notes.txt",
            declaredType: "text/plain",
            detectedType: "text/plain",
            typeDescription: nil,
            size: 8192,
            sha256: String(repeating: "ab", count: 32),
            verdict: verdict,
            signature: signature,
            reason: verdict == .clean ? nil : "found",
            state: verdict == .clean ? .stored : .quarantined,
            signatureVersion: "v1",
            createdAt: Self.created,
            updatedAt: Self.created.addingTimeInterval(1)
        )
    }

    /// Every column of a row but the one named `except`.
    static func columns(_ db: Database, _ table: String, where column: String, is value: String, except: String) throws -> [String: DatabaseValue] {
        let row = try #require(try Row.fetchOne(db, sql: "SELECT * FROM \(table) WHERE \(column) = ?", arguments: [value]))
        var columns: [String: DatabaseValue] = [:]
        for name in row.columnNames where name != except {
            columns[name] = row[name] as DatabaseValue
        }
        return columns
    }

    @Test func cachedStatementsWriteWhatTheRecordsWrite() async throws {
        let directory = try TemporaryDirectory()
        let database = try AppDatabase(path: directory.file("ledger.sqlite"))
        try await database.writer.write { db in
            for (index, verdict) in [Verdict.Kind.clean, .infected].enumerated() {
                var byRecord = Self.record(id: "record-\(index)", verdict: verdict, signature: verdict == .clean ? nil : "Test.Sig")
                var byStatement = byRecord
                byStatement.id = "statement-\(index)"
                try byRecord.insert(db)
                try byStatement.insertWithCachedStatement(db)
                #expect(try TransferRecord.fetchOne(db, key: byStatement.id) == byStatement)
                #expect(
                    try Self.columns(db, "transfer", where: "id", is: byRecord.id, except: "id")
                        == Self.columns(db, "transfer", where: "id", is: byStatement.id, except: "id")
                )
                byRecord = byStatement
            }

            // Dates as GRDB writes them, rounded to the nearest millisecond, at the edges of seconds and days, and
            // at random instants with random fractions of a millisecond.
            let instants: [TimeInterval] = [
                0, 0.0004, 0.000_6, 0.9995, 0.999_6, 86_399.9999, 951_782_400.5, 1_795_334_472.987, 1_795_334_472.999_6,
                4_102_444_799.999_999,
            ]
            var generator = SystemRandomNumberGenerator()
            let random = (0..<200).map { _ in TimeInterval(generator.next() % 4_000_000_000_000_000) / 1_000_000 }
            for (index, instant) in (instants + random).enumerated() {
                var byRecord = Self.record(id: "date-record-\(index)")
                byRecord.createdAt = Date(timeIntervalSince1970: instant)
                byRecord.updatedAt = Date(timeIntervalSince1970: instant + 0.0007)
                var byStatement = byRecord
                byStatement.id = "date-statement-\(index)"
                try byRecord.insert(db)
                try byStatement.insertWithCachedStatement(db)
                let expected = try Self.columns(db, "transfer", where: "id", is: byRecord.id, except: "id")
                let written = try Self.columns(db, "transfer", where: "id", is: byStatement.id, except: "id")
                #expect(
                    written == expected,
                    "\(instant): \(String(describing: expected["createdAt"])) \(String(describing: written["createdAt"])) \(String(describing: expected["updatedAt"])) \(String(describing: written["updatedAt"]))"
                )
            }

            try RecipientRecord(transferId: "record-0", recipient: "bob@example.org").insert(db)
            try RecipientRecord(transferId: "statement-0", recipient: "bob@example.org").insertWithCachedStatement(db)
            #expect(try RecipientRecord.filter(Column("recipient") == "bob@example.org").fetchCount(db) == 2)

            let issuance = TokenIssuanceRecord(
                tokenId: "by-record",
                transferId: "record-0",
                recipient: "bob@example.org",
                keyId: "dev",
                issuedAt: Self.created,
                expiresAt: Self.created.addingTimeInterval(900),
                usedAt: nil
            )
            var byStatement = issuance
            byStatement.tokenId = "by-statement"
            try issuance.insert(db)
            try byStatement.insertWithCachedStatement(db)
            #expect(try TokenIssuanceRecord.fetchOne(db, key: "by-statement") == byStatement)
            #expect(
                try Self.columns(db, "tokenIssuance", where: "tokenId", is: "by-record", except: "tokenId")
                    == Self.columns(db, "tokenIssuance", where: "tokenId", is: "by-statement", except: "tokenId")
            )

            let slot = UploadSlotRecord(path: "/upload/a/b", transferId: "record-0", createdAt: Self.created)
            var slotByStatement = slot
            slotByStatement.path = "/upload/c/d"
            try slot.insert(db)
            try slotByStatement.insertWithCachedStatement(db)
            #expect(try UploadSlotRecord.fetchOne(db, key: "/upload/c/d") == slotByStatement)

            // The verdict cache: insert, then replace, and read back as the record reads it.
            var cached = VerdictCacheRecord(
                sha256: "cd",
                signatureVersion: "v1",
                detectedType: "text/plain",
                typeDescription: "",
                createdAt: Self.created
            )
            try cached.saveWithCachedStatement(db)
            cached.detectedType = "image/png"
            try cached.saveWithCachedStatement(db)
            #expect(try VerdictCacheRecord.fetchAll(db) == [cached])
            #expect(try VerdictCacheRecord.fetchWithCachedStatement(db, sha256: "cd", signatureVersion: "v1") == cached)
            #expect(try VerdictCacheRecord.fetchWithCachedStatement(db, sha256: "cd", signatureVersion: "v2") == nil)
        }
    }

    @Test func auditEntriesChainAndTheirDetailsReadAsTheEncoderWritesThem() async throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let samples: [[String: String]] = [
            [:],
            ["sha256": String(repeating: "0f", count: 32), "size": "8192", "verdict": "clean", "state": "stored"],
            ["signature": "Airlock.Test.EICAR", "reason": "type mismatch: declared image/png but the content is an archive"],
            ["reason": "declared \"text/plain\\x\" with a\ttab", "slot": "/upload/é/ü.txt"],
        ]
        for details in samples {
            #expect(try AuditLog.json(details) == String(decoding: try encoder.encode(details), as: UTF8.self))
        }

        let directory = try TemporaryDirectory()
        let database = try AppDatabase(path: directory.file("ledger.sqlite"))
        let entries = try await database.writer.write { db in
            try samples.map {
                try AuditLog.append(db, at: Self.created, actor: "server:prosody", action: "transfer.created", transferId: "t", details: $0)
            }
        }
        let stored = try await database.writer.read { db in try AuditEntry.order(Column("id")).fetchAll(db) }
        #expect(stored == entries)
        #expect(stored.map(\.id) == [1, 2, 3, 4])
        for (previous, entry) in zip([nil] + stored.dropLast(), stored) {
            #expect(entry.previousHash == (previous?.hash ?? AuditEntry.genesisHash))
            #expect(entry.hash == entry.computedHash())
        }
    }

    @Test func transferJSONIsWhatTheEncoderWrites() throws {
        var documents: [TransferDocument] = []
        let grants = [
            DownloadGrant(recipient: "bob@example.org", url: "http://127.0.0.1:8080/v1/files/abc.def", expiresAt: Self.created + 900),
            DownloadGrant(recipient: "carol@example.org", url: "https://x.example/v1/files/x", expiresAt: Self.created + 0.5),
        ]
        documents.append(TransferDocument(Self.record(id: "a"), recipients: ["bob@example.org", "carol@example.org"], downloads: grants))
        documents.append(TransferDocument(Self.record(id: "b", verdict: .infected, signature: "Test.Sig"), recipients: [], downloads: []))
        documents.append(TransferDocument(Self.record(id: "c"), recipients: ["bob@example.org"]))
        var unusual = Self.record(id: "d")
        unusual.filename = "résumé \"final\".txt"
        unusual.declaredType = nil
        documents.append(TransferDocument(unusual, recipients: ["bob@example.org"]))
        var slashes = Self.record(id: "e")
        slashes.reason = "a/b\\c"
        documents.append(TransferDocument(slashes, recipients: ["dave@example.org/phone"]))
        // Dates on either side of whole seconds, leap days, the epoch and far ahead.
        var generator = SystemRandomNumberGenerator()
        // A response's dates come from `Date()`, with fractions finer than a millisecond.
        let instants: [TimeInterval] = [0, 0.999, 0.999_6, 951_782_400.5, 1_709_164_799.999_9, 4_102_444_800, 253_402_300_799]
        let random = (0..<300).map { _ in Double(generator.next() % 4_000_000_000) + Double(generator.next() % 1_000_000) / 1_000_000 }
        for seconds in instants + random {
            var record = Self.record(id: "f")
            record.createdAt = Date(timeIntervalSince1970: seconds)
            documents.append(TransferDocument(record, recipients: []))
        }
        for document in documents {
            let expected = String(decoding: try TransferDocument.encoder.encode(document), as: UTF8.self)
            #expect(String(decoding: try document.json(), as: UTF8.self) == expected)
        }
    }
}
