import AirlockCore
import AirlockTestSupport
import AsyncHTTPClient
import Crypto
import Foundation
import GRDB
import HTTPTypes
import HummingbirdTesting
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import Testing

@Suite("hand-off API on a live server")
struct HandOffTests {
    @Test func operationsEndpoints() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            let health = try await client.execute(uri: "/healthz", method: .get)
            #expect(health.status == .ok)
            let ready = try await client.execute(uri: "/readyz", method: .get)
            #expect(ready.status == .ok)
            let readiness = try JSONSerialization.jsonObject(with: ready.bytes) as? [String: Any]
            #expect(readiness?["status"] as? String == "ready")
            #expect(readiness?["signatures"] as? Int == 3)
            #expect(readiness?["databaseVersion"] as? String == "v9")
            #expect(readiness?["signaturesLoadedAt"] is String)
            #expect(readiness?["lastReloadError"] == nil)
            #expect((readiness?["signatureVersion"] as? String)?.isEmpty == false)

            _ = try await client.handOff(Data("count me\n".utf8))
            let metrics = try await client.execute(uri: "/metrics", method: .get)
            let text = String(decoding: metrics.bytes, as: UTF8.self)
            #expect(text.contains("airlock_uploads_total 1"))
            #expect(text.contains(#"airlock_verdicts_total{verdict="clean"} 1"#))
            #expect(text.contains("airlock_inspection_duration_seconds_bucket"))
        }
    }

    @Test func unknownRoutesAndWrongMethods() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            let unknown = try await client.execute(uri: "/nothing-here", method: .get)
            #expect(unknown.status == .notFound)
            #expect(try unknown.decode(ErrorBody.self).error == "not_found")
            let put = try await client.execute(uri: "/v1/transfers", method: .put, headers: [.authorization: "Bearer \(ServerHarness.prosodyKey)"])
            #expect(put.status == .methodNotAllowed)
            #expect(put.headers[.allow] == "POST")
            #expect(try await client.execute(uri: "/v1/files/abc", method: .post).status == .methodNotAllowed)
            #expect(try await client.execute(uri: "/healthz", method: .post).status == .methodNotAllowed)
        }
    }

    @Test func apiKeysAreRequired() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            let missing = try await client.handOff(Data("x".utf8), key: nil)
            #expect(missing.status == .unauthorized)
            #expect(try missing.decode(ErrorBody.self).error == "unauthorized")
            #expect(try await client.handOff(Data("x".utf8), key: "not-the-key-at-all-000").status == .unauthorized)
            #expect(try await client.execute(uri: "/v1/transfers/123", method: .get).status == .unauthorized)
            // The scheme in any case, the key with blanks around it; another scheme or none is refused.
            let key = ServerHarness.prosodyKey
            for accepted in ["bEaReR \(key)", "BEARER \t \(key) \t", "Bearer \u{2003}\(key)\u{00A0}"] {
                let response = try await client.execute(uri: "/v1/transfers/123", method: .get, headers: [.authorization: accepted])
                #expect(response.status == .notFound, "\(accepted.debugDescription)")
            }
            for refused in ["Basic \(key)", "Bearer", "Bearer\(key)", "Bearer x\(key)", "\(key)"] {
                let response = try await client.execute(uri: "/v1/transfers/123", method: .get, headers: [.authorization: refused])
                #expect(response.status == .unauthorized, "\(refused.debugDescription)")
            }
            // Nothing was stored for refused requests.
            #expect(harness.files(under: harness.stagingDirectory).isEmpty)
        }
    }

    @Test func invalidParametersAre400() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            #expect(try await client.handOff(Data("x".utf8), sender: "").status == .badRequest)
            #expect(try await client.handOff(Data("x".utf8), recipients: []).status == .badRequest)
            #expect(try await client.handOff(Data("x".utf8), filename: "").status == .badRequest)
            #expect(try await client.handOff(Data("x".utf8), filename: "evil\u{0}.txt").status == .badRequest)
            #expect(try await client.handOff(Data("x".utf8), filename: "tab\there.txt").status == .badRequest)
            #expect(try await client.handOff(Data("x".utf8), filename: String(repeating: "é", count: 128) + ".txt").status == .badRequest)
            let message = try await client.handOff(Data("x".utf8), sender: "").decode(ErrorBody.self)
            #expect(message.error == "invalid_request")
            #expect(message.message.contains("sender"))
        }
    }

    @Test func directoryPartsOfFilenamesAreStripped() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            let response = try await client.handOff(Data("plain\n".utf8), filename: "../../etc/passwd")
            #expect(response.status == .created)
            #expect(try response.decode(TransferBody.self).filename == "passwd")
        }
    }

    @Test func uploadsOverTheLimitAre413() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            let response = try await client.handOff(Data(count: (1 << 20) + 1))
            #expect(response.status == .contentTooLarge)
            #expect(try response.decode(ErrorBody.self).error == "too_large")

            // A chunked body that grows past the limit is cut off with 413.
            let port = try #require(client.port)
            let head = """
                POST /v1/transfers?sender=a@x&recipient=b@x&filename=big HTTP/1.1\r
                Host: 127.0.0.1\r
                Authorization: Bearer \(ServerHarness.prosodyKey)\r
                Transfer-Encoding: chunked\r
                \r

                """
            let chunk = Data("10000\r\n".utf8) + Data(count: 0x10000) + Data("\r\n".utf8)
            let answer = try await RawHTTP.exchange(
                port: port,
                parts: [Data(head.utf8)] + Array(repeating: chunk, count: 20) + [Data("0\r\n\r\n".utf8)]
            )
            #expect(answer.hasPrefix("HTTP/1.1 413"))
            // The cut-off upload left nothing behind.
            #expect(harness.files(under: harness.stagingDirectory).isEmpty)
            #expect(harness.files(under: harness.filesDirectory).isEmpty)
        }
    }

    @Test func expectContinueIsAnsweredBeforeTheBodyIsSent() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            let connection = try RawConnection(port: try #require(client.port))
            defer { connection.close() }
            let body = Data("sent after 100 Continue\n".utf8)
            connection.send(
                Data(
                    """
                    POST /v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename=c.txt HTTP/1.1\r
                    Host: 127.0.0.1\r
                    Authorization: Bearer \(ServerHarness.prosodyKey)\r
                    Content-Type: text/plain\r
                    Content-Length: \(body.count)\r
                    Expect: 100-continue\r
                    \r

                    """.utf8
                )
            )
            let interim = await connection.receive(until: "\r\n\r\n")
            #expect(interim.hasPrefix("HTTP/1.1 100 Continue\r\n"))
            connection.send(body)
            let final = await connection.receive(until: "}")
            #expect(final.contains("HTTP/1.1 201 Created"))
            #expect(final.contains("\"verdict\":\"clean\""))
        }
    }

    @Test func expectContinueOverTheLimitGetsTheFinalAnswerInstead() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            let connection = try RawConnection(port: try #require(client.port))
            defer { connection.close() }
            connection.send(
                Data(
                    """
                    POST /v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename=c.bin HTTP/1.1\r
                    Host: 127.0.0.1\r
                    Authorization: Bearer \(ServerHarness.prosodyKey)\r
                    Content-Length: \(harness.configuration.limits.maxUploadBytes + 1)\r
                    Expect: 100-continue\r
                    \r

                    """.utf8
                )
            )
            let answer = await connection.receive(until: "}")
            #expect(answer.hasPrefix("HTTP/1.1 413"))
            #expect(!answer.contains("100 Continue"))
        }
    }

    @Test func aCleanFileIsStoredAndDownloadable() async throws {
        let harness = try ServerHarness()
        let content = Data("The minutes of Tuesday's meeting.\n".utf8)
        try await harness.run { client in
            let response = try await client.handOff(
                content,
                filename: "résumé (final)+1.txt",
                recipients: ["bob@example.org", "carol@example.org"],
                contentType: "text/plain"
            )
            #expect(response.status == .created)
            let transfer = try response.decode(TransferBody.self)
            #expect(transfer.verdict == "clean")
            #expect(transfer.state == "stored")
            #expect(transfer.server == "prosody")
            #expect(transfer.detectedType == "text/plain")
            #expect(transfer.sha256 == SHA256.hash(data: content).map { String(format: "%02x", $0) }.joined())
            #expect(transfer.downloads?.map(\.recipient) == ["bob@example.org", "carol@example.org"])

            let url = try #require(transfer.downloads?.first?.url)
            #expect(url.hasPrefix("http://127.0.0.1:8080/v1/files/"))
            let download = try await client.download(url)
            #expect(download.status == .ok)
            #expect(download.bytes == content)
            #expect(download.headers[.contentDisposition] == "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9%20%28final%29%2B1.txt")
            #expect(download.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff")
            #expect(download.headers[HTTPField.Name("Content-Security-Policy")!] == "default-src 'none'; sandbox")
            #expect(download.headers[.cacheControl] == "private, no-store")
            #expect(download.headers[.contentLength] == String(content.count))

            let partial = try await client.download(url, headers: [.range: "bytes=4-10"])
            #expect(partial.status == .partialContent)
            #expect(partial.bytes == content[4...10])
            #expect(partial.headers[.contentRange] == "bytes 4-10/\(content.count)")
            let suffix = try await client.download(url, headers: [.range: "bytes=-5"])
            #expect(suffix.bytes == content.suffix(5))
            let outside = try await client.download(url, headers: [.range: "bytes=999-"])
            #expect(outside.status == .rangeNotSatisfiable)

            let head = try await client.download(url, method: .head)
            #expect(head.status == .ok)
            #expect(head.bytes.isEmpty)

            let shown = try await client.execute(
                uri: "/v1/transfers/\(transfer.id)",
                method: .get,
                headers: [.authorization: "Bearer \(ServerHarness.prosodyKey)"]
            )
            #expect(try shown.decode(TransferBody.self).downloads == nil)
            // Another IM server cannot see it.
            let other = try await client.execute(
                uri: "/v1/transfers/\(transfer.id)",
                method: .get,
                headers: [.authorization: "Bearer \(ServerHarness.ejabberdKey)"]
            )
            #expect(other.status == .notFound)
            #expect(harness.files(under: harness.stagingDirectory).isEmpty)
        }
    }

    @Test func eicarIsQuarantinedEncryptedAndNeverServed() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            let response = try await client.handOff(Fixtures.eicar, filename: "eicar.com", contentType: "text/plain")
            #expect(response.status == .created)
            let transfer = try response.decode(TransferBody.self)
            #expect(transfer.verdict == "infected")
            #expect(transfer.signature?.hasPrefix("Airlock.Test.EICAR") == true)
            #expect(transfer.state == "quarantined")
            #expect(transfer.downloads?.isEmpty != false)

            // On disk: only in the quarantine, encrypted, private.
            let quarantined = harness.quarantineDirectory + "/" + transfer.id
            let stored = try Data(contentsOf: URL(fileURLWithPath: quarantined))
            #expect(stored.range(of: Fixtures.eicar) == nil)
            #expect(stored.range(of: Data("EICAR".utf8)) == nil)
            let attributes = try FileManager.default.attributesOfItem(atPath: quarantined)
            #expect((attributes[.posixPermissions] as? Int) == 0o600)
            let directoryAttributes = try FileManager.default.attributesOfItem(atPath: harness.quarantineDirectory)
            #expect((directoryAttributes[.posixPermissions] as? Int) == 0o700)
            #expect(harness.files(under: harness.filesDirectory).isEmpty)
            #expect(harness.files(under: harness.stagingDirectory).isEmpty)

            // No token can be minted for it...
            #expect(try await client.issueToken(transfer.id, recipient: "bob@example.org").status == .conflict)
            // ...and a token forged with the real key is answered 451 with the reason.
            let forged = HandCraftedToken.download(
                transferId: transfer.id,
                recipient: "bob@example.org",
                secret: harness.configuration.tokens.keys["dev"]!,
                expires: harness.clock.now + 60
            )
            let refused = try await client.execute(uri: "/v1/files/\(forged)", method: .get)
            #expect(refused.status == .unavailableForLegalReasons)
            let body = try refused.decode(ErrorBody.self)
            #expect(body.verdict == "infected")
            #expect(body.signature?.hasPrefix("Airlock.Test.EICAR") == true)
        }
    }

    /// Uploads with a small Content-Length are received in memory and inspected in one step; the same bytes sent
    /// chunked are streamed through a staging file. Both ways must end with the same verdict, type and bytes. Each
    /// way runs on its own server, so the verdict cache of one cannot answer for the other; `scanner.maxFileSize`
    /// is lowered to 32 KiB so that both ways meet the limits too.
    @Test func smallUploadsInMemoryAndStreamedEndAlike() async throws {
        let directory = try TemporaryDirectory()
        try directory.write("notes.txt", Data("inside an archive\n".utf8))
        let archive = try Data(contentsOf: URL(fileURLWithPath: try directory.zip("notes.zip", members: ["notes.txt"])))
        // A member over scanner.maxFileSize, which libclamav skips silently: unscannable, never clean.
        try directory.write("big.txt", Data(repeating: UInt8(ascii: "a"), count: 48 << 10))
        let bomb = try Data(contentsOf: URL(fileURLWithPath: try directory.zip("big.zip", members: ["big.txt"])))
        #expect(bomb.count < 32 << 10)
        let cases: [(name: String, body: Data, type: String)] = [
            ("notes.txt", Data("The minutes of Tuesday's meeting.\n".utf8), "text/plain"),
            ("eicar.com", Fixtures.eicar, "text/plain"),
            ("cat.png", archive, "image/png"),
            ("empty.txt", Data(), "text/plain"),
            ("big.zip", bomb, "application/zip"),
            ("noise.bin", Fixtures.randomBytes(count: Broker.inMemoryLimit, seed: 7), "application/octet-stream"),
        ]

        func handOffAll(streamed: Bool) async throws -> [TransferBody] {
            let harness = try ServerHarness { $0.scanner.maxFileSize = 32 << 10 }
            return try await harness.run { client in
                var transfers: [TransferBody] = []
                for upload in cases {
                    let transfer: TransferBody
                    if streamed {
                        let head = """
                            POST /v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename=\(upload.name) HTTP/1.1\r
                            Host: 127.0.0.1\r
                            Authorization: Bearer \(ServerHarness.prosodyKey)\r
                            Content-Type: \(upload.type)\r
                            Transfer-Encoding: chunked\r
                            Connection: close\r
                            \r

                            """
                        var parts = [Data(head.utf8)]
                        if !upload.body.isEmpty {
                            parts.append(Data("\(String(upload.body.count, radix: 16))\r\n".utf8) + upload.body + Data("\r\n".utf8))
                        }
                        parts.append(Data("0\r\n\r\n".utf8))
                        let answer = try await RawHTTP.exchange(port: try #require(client.port), parts: parts)
                        #expect(answer.hasPrefix("HTTP/1.1 201"), "\(upload.name): \(answer.prefix(300))")
                        let json = try #require(answer.range(of: "\r\n\r\n").map { answer[$0.upperBound...] })
                        transfer = try JSONDecoder().decode(TransferBody.self, from: Data(json.utf8))
                    } else {
                        let response = try await client.handOff(upload.body, filename: upload.name, contentType: upload.type)
                        #expect(response.status == .created)
                        transfer = try response.decode(TransferBody.self)
                    }
                    if transfer.verdict == "clean" {
                        let url = try #require(transfer.downloads?.first?.url)
                        #expect(try await client.download(url).bytes == upload.body, "\(upload.name)")
                    } else {
                        #expect(FileManager.default.fileExists(atPath: harness.quarantineDirectory + "/" + transfer.id))
                    }
                    transfers.append(transfer)
                }
                #expect(harness.files(under: harness.stagingDirectory).isEmpty)
                return transfers
            }
        }

        let inMemory = try await handOffAll(streamed: false)
        let streamed = try await handOffAll(streamed: true)
        #expect(inMemory.map(\.verdict) == ["clean", "infected", "blocked", "clean", "unscannable", "unscannable"])
        for (upload, (first, second)) in zip(cases, zip(inMemory, streamed)) {
            #expect(first.size == upload.body.count && second.size == upload.body.count)
            #expect(first.sha256 == second.sha256)
            #expect(first.detectedType == second.detectedType, "\(upload.name)")
            #expect(first.verdict == second.verdict, "\(upload.name)")
            #expect(first.signature == second.signature)
            #expect(first.reason == second.reason)
            #expect(first.state == second.state)
        }
    }

    @Test func theVerdictCacheSkipsTheScanButNotThePolicy() async throws {
        let harness = try ServerHarness()
        let directory = try TemporaryDirectory()
        try directory.write("notes.txt", Data("inside an archive\n".utf8))
        let archive = try Data(contentsOf: URL(fileURLWithPath: try directory.zip("notes.zip", members: ["notes.txt"])))
        try await harness.run { (client: any TestClientProtocol) async throws -> Void in
            let first = try await client.handOff(archive, filename: "notes.zip", contentType: "application/zip").decode(TransferBody.self)
            #expect(first.verdict == "clean")
            // The same bytes declared as an image: the cached clean verdict must not hide the type mismatch.
            let disguised = try await client.handOff(archive, filename: "cat.png", contentType: "image/png").decode(TransferBody.self)
            #expect(disguised.verdict == "blocked")
            #expect(disguised.reason?.hasPrefix("type mismatch: declared image/png") == true)
            #expect(disguised.detectedType == "application/zip")
            let again = try await client.handOff(archive, filename: "again.zip", contentType: "application/zip").decode(TransferBody.self)
            #expect(again.verdict == "clean")
        }
        let database = try AppDatabase(path: harness.configuration.storage.dataDirectory + "/airlock.sqlite")
        let cached = try await database.writer.read { db in try VerdictCacheRecord.fetchAll(db) }
        #expect(cached.count == 1)
        #expect(cached.first?.detectedType == "application/zip")
    }

    @Test func deleteRemovesBytesUnlessShared() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            let content = Data("shared content\n".utf8)
            let first = try await client.handOff(content).decode(TransferBody.self)
            let second = try await client.handOff(content).decode(TransferBody.self)
            #expect(harness.files(under: harness.filesDirectory).count == 1)
            let auth: HTTPFields = [.authorization: "Bearer \(ServerHarness.prosodyKey)"]

            // Another server cannot delete it.
            let foreign = try await client.execute(
                uri: "/v1/transfers/\(first.id)",
                method: .delete,
                headers: [.authorization: "Bearer \(ServerHarness.ejabberdKey)"]
            )
            #expect(foreign.status == .notFound)

            #expect(try await client.execute(uri: "/v1/transfers/\(first.id)", method: .delete, headers: auth).status == .noContent)
            #expect(harness.files(under: harness.filesDirectory).count == 1)
            let shown = try await client.execute(uri: "/v1/transfers/\(first.id)", method: .get, headers: auth).decode(TransferBody.self)
            #expect(shown.state == "deleted")
            let gone = try await client.download(try #require(first.downloads?.first?.url))
            #expect(gone.status == .gone)
            #expect(try await client.issueToken(first.id, recipient: "bob@example.org").status == .conflict)
            // The second transfer of the same bytes still downloads.
            #expect(try await client.download(try #require(second.downloads?.first?.url)).bytes == content)

            #expect(try await client.execute(uri: "/v1/transfers/\(second.id)", method: .delete, headers: auth).status == .noContent)
            #expect(harness.files(under: harness.filesDirectory).isEmpty)
            #expect(try await client.execute(uri: "/v1/transfers/no-such-id", method: .delete, headers: auth).status == .notFound)
        }
    }

    @Test func fiftyConcurrentHandOffs() async throws {
        let harness = try ServerHarness()
        try await harness.run { client in
            // Fifty connections at once (the test client's pool would take eight, and queue the rest against its own
            // time-outs, which a loaded machine running the whole suite hit while the server was fine).
            let port = try #require(client.port)
            let http = HTTPClient(
                eventLoopGroupProvider: .singleton,
                configuration: .init(
                    timeout: .init(connect: .seconds(120), read: .seconds(300)),
                    connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 64)
                )
            )
            defer { _ = http.shutdown() }
            let results = try await withThrowingTaskGroup(of: (Data, TransferBody).self) { group in
                for index in 0..<50 {
                    group.addTask {
                        let content = Fixtures.randomBytes(count: 20_000 + index * 997, seed: UInt64(index + 1))
                        var request = HTTPClientRequest(
                            url: "http://127.0.0.1:\(port)/v1/transfers?sender=alice@example.org&recipient=bob@example.org&filename=file\(index).bin"
                        )
                        request.method = .POST
                        request.headers.add(name: "Authorization", value: "Bearer \(ServerHarness.prosodyKey)")
                        request.headers.add(name: "Content-Type", value: "application/octet-stream")
                        request.body = .bytes(ByteBuffer(bytes: content))
                        let response = try await http.execute(request, timeout: .seconds(300))
                        let body = try await response.body.collect(upTo: 1 << 20)
                        #expect(response.status == .created)
                        return (content, try JSONDecoder().decode(TransferBody.self, from: Data(buffer: body)))
                    }
                }
                var results: [(Data, TransferBody)] = []
                for try await result in group { results.append(result) }
                return results
            }
            #expect(results.count == 50)
            #expect(Set(results.map(\.1.id)).count == 50)
            // The downloads check what was stored, one after another: fifty at once through the test client's pool
            // of eight queued against its time-outs on a loaded machine (getConnectionFromPoolTimeout), which
            // tested the client, not the server.
            for (content, transfer) in results {
                #expect(transfer.verdict == "clean")
                let downloaded = try await client.download(try #require(transfer.downloads?.first?.url))
                #expect(downloaded.status == .ok)
                #expect(SHA256.hash(data: downloaded.bytes) == SHA256.hash(data: content))
                #expect(transfer.sha256 == SHA256.hash(data: content).map { String(format: "%02x", $0) }.joined())
            }
            #expect(harness.files(under: harness.filesDirectory).count == 50)
        }
    }

    @Test func transfersSurviveARestart() async throws {
        let harness = try ServerHarness()
        let content = Data("kept across restarts\n".utf8)
        let (clean, infected) = try await harness.run { client in
            (
                try await client.handOff(content).decode(TransferBody.self),
                try await client.handOff(Fixtures.eicar).decode(TransferBody.self)
            )
        }
        try await harness.run { client in
            let auth: HTTPFields = [.authorization: "Bearer \(ServerHarness.prosodyKey)"]
            let shown = try await client.execute(uri: "/v1/transfers/\(clean.id)", method: .get, headers: auth).decode(TransferBody.self)
            #expect(shown.state == "stored")
            #expect(shown.sha256 == clean.sha256)
            let quarantined = try await client.execute(uri: "/v1/transfers/\(infected.id)", method: .get, headers: auth).decode(TransferBody.self)
            #expect(quarantined.state == "quarantined")
            #expect(FileManager.default.fileExists(atPath: harness.quarantineDirectory + "/" + infected.id))

            // The old URL still works, and a new token downloads the same bytes.
            #expect(try await client.download(try #require(clean.downloads?.first?.url)).bytes == content)
            let token = try await client.issueToken(clean.id, recipient: "bob@example.org")
            #expect(token.status == .created)
            let url = try #require(try JSONSerialization.jsonObject(with: token.bytes) as? [String: Any])["url"] as? String
            #expect(try await client.download(try #require(url)).bytes == content)
        }
        // The ledger holds both transfers and an audit entry for each.
        let database = try AppDatabase(path: harness.configuration.storage.dataDirectory + "/airlock.sqlite")
        let entries = try await database.writer.read { db in try AuditEntry.fetchAll(db) }
        #expect(entries.map(\.action) == ["transfer.created", "transfer.created"])
        #expect(entries[1].previousHash == entries[0].hash)
        #expect(entries.allSatisfy { $0.hash == $0.computedHash() })
    }
}
