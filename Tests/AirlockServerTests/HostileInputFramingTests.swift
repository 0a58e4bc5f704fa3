import AirlockCore
import AirlockTestSupport
import Foundation
import HTTPTypes
import HummingbirdTesting
import NIOCore
import Testing

/// Malformed HTTP framing and slow clients, over raw sockets.
@Suite("hostile input: HTTP framing and slow clients", .serialized)
struct HostileInputFramingTests {
    /// A malformed request and the status it must get.
    struct Malformed: CustomTestStringConvertible, Sendable {
        var name: String
        var request: Data
        var testDescription: String { self.name }
    }

    static let body = Data("hello".utf8)

    /// Framing that the HTTP parser refuses: 400 and the connection closed.
    static let malformed: [Malformed] = [
        .init(name: "negative Content-Length", request: Hostile.raw(Hostile.handOffLines(extra: ["Content-Length: -5"]), body: body)),
        .init(name: "non-numeric Content-Length", request: Hostile.raw(Hostile.handOffLines(extra: ["Content-Length: five"]), body: body)),
        .init(
            name: "Content-Length overflowing 64 bits",
            request: Hostile.raw(Hostile.handOffLines(extra: ["Content-Length: 99999999999999999999999999"]), body: body)
        ),
        .init(
            name: "two different Content-Lengths",
            request: Hostile.raw(Hostile.handOffLines(extra: ["Content-Length: 5", "Content-Length: 6"]), body: body + Data("!".utf8))
        ),
        .init(
            name: "Content-Length with chunked (request smuggling)",
            request: Hostile.raw(
                Hostile.handOffLines(extra: ["Content-Length: 5", "Transfer-Encoding: chunked"]),
                body: Data("5\r\nhello\r\n0\r\n\r\n".utf8)
            )
        ),
        .init(
            name: "chunk size that is not hex",
            request: Hostile.raw(Hostile.handOffLines(extra: ["Transfer-Encoding: chunked"]), body: Data("zz\r\nhello\r\n0\r\n\r\n".utf8))
        ),
        .init(
            name: "chunk without its CRLF",
            request: Hostile.raw(Hostile.handOffLines(extra: ["Transfer-Encoding: chunked"]), body: Data("5\r\nhelloXX3\r\nabc\r\n0\r\n\r\n".utf8))
        ),
        .init(
            name: "chunk size overflowing 64 bits",
            request: Hostile.raw(Hostile.handOffLines(extra: ["Transfer-Encoding: chunked"]), body: Data("fffffffffffffffffffffff\r\nhello\r\n".utf8))
        ),
        .init(
            name: "unknown transfer coding",
            request: Hostile.raw(Hostile.handOffLines(extra: ["Transfer-Encoding: gzip"]), body: body)
        ),
        .init(name: "garbage request line", request: Data("GARBAGE\r\n\r\n".utf8)),
        .init(name: "unknown HTTP version", request: Hostile.raw(["GET /healthz HTTP/7.3", "Host: 127.0.0.1"])),
        .init(
            name: "5,000 headers",
            request: Hostile.raw(Hostile.handOffLines(extra: (0..<5000).map { "X-Flood-\($0): \($0)" } + ["Content-Length: 5"]), body: body)
        ),
        .init(
            name: "one 200 KiB header",
            request: Hostile.raw(
                Hostile.handOffLines(extra: ["X-Huge: " + String(repeating: "h", count: 200 * 1024), "Content-Length: 5"]),
                body: body
            )
        ),
        .init(
            name: "NUL in a header value",
            request: Hostile.raw(Hostile.handOffLines(extra: ["X-Evil: a\u{0}b", "Content-Length: 5"]), body: body)
        ),
        .init(
            name: "header line without a colon",
            request: Hostile.raw(Hostile.handOffLines(extra: ["this is not a header", "Content-Length: 5"]), body: body)
        ),
    ]

    @Test(arguments: Self.malformed)
    func malformedFramingIs400AndCloses(_ attack: Malformed) async throws {
        try await Hostile.underAttack { _, port, harness in
            let reply = try await RawHTTP.converse(port: port, parts: [attack.request])
            #expect(reply.statuses.allSatisfy { $0 < 500 }, "\(reply.statuses)")
            #expect(reply.status == 400, "answer: \(String(decoding: reply.bytes.prefix(300), as: UTF8.self))")
            #expect(reply.closedByServer)
            #expect(Hostile.storedFiles(harness) == 1)
        }
    }

    /// A Content-Length far over the limit, but a valid number: refused at the application layer with 413 before
    /// any byte of the body is read.
    @Test func aHugeContentLengthIs413() async throws {
        try await Hostile.underAttack { _, port, harness in
            let reply = try await RawHTTP.converse(
                port: port,
                parts: [Hostile.raw(Hostile.handOffLines(extra: ["Content-Length: 1000000000000", "Connection: close"]), body: Self.body)]
            )
            Hostile.expectJSONError(reply, 413, code: "too_large")
            #expect(Hostile.storedFiles(harness) == 1)
        }
    }

    /// Content-Length shorter than the body: the declared bytes are the request, the rest is a malformed second
    /// request answered 400. Nothing beyond the declared length is stored.
    @Test func aContentLengthShorterThanTheBodyStoresOnlyTheDeclaredBytes() async throws {
        try await Hostile.underAttack { _, port, harness in
            let reply = try await RawHTTP.converse(
                port: port,
                parts: [
                    Hostile.raw(
                        Hostile.handOffLines(extra: ["Content-Length: 3"]),
                        body: Data("abcSMUGGLED /v1/transfers HTTP/1.1\r\nX: y\r\n\r\n".utf8)
                    )
                ]
            )
            #expect(reply.statuses.first == 201)
            let transfer = try JSONDecoder().decode(TransferBody.self, from: reply.body)
            #expect(transfer.size == 3)
            #expect(transfer.sha256 == Hostile.sha256(Data("abc".utf8)))
            #expect(reply.statuses.count == 2 && reply.statuses.last.map { (400..<500).contains($0) } == true, "\(reply.statuses)")
            #expect(Hostile.storedFiles(harness) == 2)
        }
    }

    /// Truncated bodies: the client stops sending (and shuts its side) before the declared end. No transfer is
    /// recorded from the partial bytes, nothing is left in staging.
    @Test(arguments: [
        // 60,000 bytes are received in memory (at most 64 KiB), 100,000 through a staging file.
        ["Content-Length: 100000"], ["Content-Length: 60000"], ["Transfer-Encoding: chunked"],
    ])
    func truncatedBodiesLeaveNothingBehind(framing: [String]) async throws {
        try await Hostile.underAttack { _, port, harness in
            let partial =
                framing[0].hasPrefix("Transfer")
                ? Data("1000\r\n".utf8) + Fixtures.randomBytes(count: 2000, seed: 7) : Fixtures.randomBytes(count: 50_000, seed: 7)
            let reply = try await RawHTTP.converse(
                port: port,
                parts: [Hostile.raw(Hostile.handOffLines(filename: "cut.bin", extra: framing), body: partial)],
                halfClose: true
            )
            #expect(reply.statuses.allSatisfy { !(200..<300).contains($0) && $0 < 500 }, "\(reply.statuses)")
            #expect(await Hostile.eventually { harness.files(under: harness.stagingDirectory).isEmpty })
            #expect(Hostile.storedFiles(harness) == 1)
        }
    }

    /// A body that stops arriving without the client closing: the idle timeout closes the connection and the
    /// partial upload is discarded.
    @Test func aBodyThatStopsArrivingIsCutOffByTheIdleTimeout() async throws {
        try await Hostile.underAttack({ $0.http.idleTimeoutSeconds = 1 }) { _, port, harness in
            let reply = try await RawHTTP.converse(
                port: port,
                parts: [Hostile.raw(Hostile.handOffLines(filename: "stalled.bin", extra: ["Content-Length: 100000"]), body: Data(count: 1000))],
                timeout: 30
            )
            #expect(reply.closedByServer)
            #expect(reply.statuses.allSatisfy { !(200..<300).contains($0) && $0 < 500 }, "\(reply.statuses)")
            #expect(await Hostile.eventually { harness.files(under: harness.stagingDirectory).isEmpty })
            #expect(Hostile.storedFiles(harness) == 1)
        }
    }

    /// 64 KiB request lines reach the application, which answers with a JSON 4xx.
    @Test func sixtyFourKiBRequestLines() async throws {
        try await Hostile.underAttack { _, port, harness in
            let longName = String(repeating: "n", count: 64 * 1024)
            let handOff = try await RawHTTP.converse(
                port: port,
                parts: [Hostile.raw(Hostile.handOffLines(filename: longName, extra: ["Content-Length: 5", "Connection: close"]), body: Self.body)]
            )
            Hostile.expectJSONError(handOff, 400, code: "invalid_request")

            let path = "/" + String(repeating: "p", count: 64 * 1024)
            let get = try await RawHTTP.converse(port: port, parts: [Hostile.raw(["GET \(path) HTTP/1.1", "Host: 127.0.0.1", "Connection: close"])])
            Hostile.expectJSONError(get, 404, code: "not_found")
            #expect(Hostile.storedFiles(harness) == 1)
        }
    }

    /// EICAR split across chunk boundaries (one byte per chunk) is still found: the scan sees the whole file.
    @Test func eicarSplitAcrossChunksIsStillFound() async throws {
        try await Hostile.underAttack { _, port, _ in
            var chunked = Data()
            for byte in Fixtures.eicar {
                chunked += Data("1\r\n".utf8) + Data([byte]) + Data("\r\n".utf8)
            }
            chunked += Data("0\r\n\r\n".utf8)
            let reply = try await RawHTTP.converse(
                port: port,
                parts: [
                    Hostile.raw(
                        Hostile.handOffLines(filename: "split.txt", extra: ["Transfer-Encoding: chunked", "Connection: close"]),
                        body: chunked
                    )
                ]
            )
            #expect(reply.status == 201)
            let transfer = try JSONDecoder().decode(TransferBody.self, from: reply.body)
            #expect(transfer.verdict == "infected")
            #expect(transfer.state == "quarantined")
        }
    }

    /// Slowloris: connections that send their headers one byte at a time, more of them than the server serves at
    /// once. The server closes each one after `http.idleTimeoutSeconds` and keeps serving a normal client meanwhile.
    @Test func slowlorisConnectionsAreClosedAndDoNotStarveOthers() async throws {
        try await Hostile.underAttack({
            $0.http.idleTimeoutSeconds = 2
            $0.http.maxConnections = 8
        }) { client, port, _ in
            let head = Data("POST /v1/transfers?sender=a@x.org&recipient=b@x.org&filename=slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".utf8)
            let drip = head + Data(repeating: UInt8(ascii: "a"), count: 100_000)
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for _ in 0..<16 {
                    group.addTask {
                        // Without a timeout these would drip for the whole minute.
                        try await RawHTTP.drip(port: port, bytes: drip, interval: 100, deadline: 60).closedByServer
                    }
                }
                // A normal client meanwhile: served (once the limit frees a slot), not starved.
                let content = Data("served despite slowloris\n".utf8)
                let created = try await Hostile.handOff(client, content, filename: "normal.txt", contentType: "text/plain")
                #expect(created.status == .created)
                let transfer = try created.decode(TransferBody.self)
                #expect(try await Hostile.download(client, try #require(transfer.downloads?.first?.url)).bytes == content)
                var closed = 0
                for try await wasClosed in group where wasClosed {
                    closed += 1
                }
                #expect(closed == 16)
            }
        }
    }

    /// Slow bodies (R.U.D.Y.): complete request heads, then a body byte every 200 ms, fast enough to dodge the idle
    /// timeout, on both upload paths. Once past the idle timeout they are cut off for arriving slower than
    /// `http.minimumUploadBytesPerSecond`, so they cannot hold the connection limit; a normal client is served.
    @Test func slowBodiesAreCutOffAndDoNotStarveOthers() async throws {
        try await Hostile.underAttack({
            $0.http.idleTimeoutSeconds = 1
            $0.http.maxConnections = 6
            $0.http.minimumUploadBytesPerSecond = 1000
        }) { client, port, harness in
            let length = 100_000
            let v = XEP0363Tests.hmac("slow/body.bin \(length)")
            let heads = [
                Hostile.raw(Hostile.handOffLines(filename: "slow.bin", extra: ["Content-Length: \(length)"])),
                Hostile.raw(["PUT /upload/slow/body.bin?v=\(v) HTTP/1.1", "Host: 127.0.0.1", "Content-Length: \(length)"]),
            ]
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for index in 0..<8 {
                    group.addTask {
                        try await RawHTTP.drip(port: port, prefix: heads[index % 2], bytes: Data(count: length), interval: 200, deadline: 60)
                            .closedByServer
                    }
                }
                let content = Data("served despite slow bodies\n".utf8)
                let created = try await Hostile.handOff(client, content, filename: "normal.txt", contentType: "text/plain")
                #expect(created.status == .created)
                var closed = 0
                for try await wasClosed in group where wasClosed {
                    closed += 1
                }
                #expect(closed == 8)
            }
            #expect(await Hostile.eventually { harness.files(under: harness.stagingDirectory).isEmpty })
            #expect(Hostile.storedFiles(harness) == 2)
        }
    }

    /// The answer to a body cut off for its pace: 408 with the JSON body, and the connection closed.
    @Test func aSlowBodyIsAnswered408() async throws {
        try await Hostile.underAttack({
            $0.http.idleTimeoutSeconds = 1
            $0.http.minimumUploadBytesPerSecond = 100_000
        }) { _, port, _ in
            let reply = try await Blocking.run {
                let connection = try RawConnection(port: port)
                defer { connection.close() }
                connection.send(Hostile.raw(Hostile.handOffLines(filename: "slow.bin", extra: ["Content-Length: 1000000"])))
                // Ten bytes every 100 ms until the server answers: far below 100,000 bytes per second.
                while !connection.waitForInput(milliseconds: 100) {
                    guard connection.send(Data(count: 10)) else { break }
                }
                return connection.readUntilClosed(timeout: 30)
            }
            Hostile.expectJSONError(reply, 408, code: "upload_too_slow")
            #expect(reply.closedByServer)
        }
    }

    /// A connection flood: more silent connections than `http.maxConnections`. Each is closed after the idle
    /// timeout, and a normal client is served.
    @Test func silentConnectionsBeyondTheLimitAreClosedAndOthersServed() async throws {
        try await Hostile.underAttack({
            $0.http.idleTimeoutSeconds = 1
            $0.http.maxConnections = 4
        }) { client, port, _ in
            try await withThrowingTaskGroup(of: RawReply.self) { group in
                for _ in 0..<12 {
                    group.addTask { try await RawHTTP.converse(port: port, parts: [], timeout: 60) }
                }
                let created = try await Hostile.handOff(client, Data("still served\n".utf8), filename: "n.txt", contentType: "text/plain")
                #expect(created.status == .created)
                var closed = 0
                for try await reply in group {
                    #expect(reply.statuses.allSatisfy { $0 < 500 })
                    if reply.closedByServer { closed += 1 }
                }
                #expect(closed == 12)
            }
        }
    }

    /// Every attack of this file, one after another on one server, with a transfer made before them all.
    @Test func oneServerSurvivesTheWholeFramingBattery() async throws {
        try await Hostile.underAttack { _, port, harness in
            for attack in Self.malformed {
                let reply = try await RawHTTP.converse(port: port, parts: [attack.request])
                #expect(reply.statuses.allSatisfy { $0 < 500 }, "\(attack.name): \(reply.statuses)")
                #expect(reply.status.map { (400..<500).contains($0) } ?? reply.closedByServer, "\(attack.name)")
            }
            #expect(Hostile.storedFiles(harness) == 1)
        }
    }
}
