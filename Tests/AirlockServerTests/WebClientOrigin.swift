import AirlockTestSupport
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Synchronization

/// A web client's own origin for browser tests: a small Hummingbird app on 127.0.0.1 (a port of its own, so another
/// origin than Airlock's) that serves a page to headless Chromium and receives the report the page posts back.
///
/// The page runs a list of `fetch()` calls (``Call``) in order, each against Airlock, and posts what each gave (status,
/// body, a readable header, or the browser's rejection) to `/report` on its own origin.
final class WebClientOrigin: Sendable {
    /// One `fetch()` the page makes.
    struct Call: Encodable, Sendable {
        var name: String
        var url: String
        var method = "GET"
        var headers: [String: String] = [:]
        /// The request body, base64 (sent as a `Uint8Array`, so the browser adds no Content-Type of its own).
        var body: String?

        init(_ name: String, _ method: String = "GET", _ url: String, headers: [String: String] = [:], body: Data? = nil) {
            self.name = name
            self.method = method
            self.url = url
            self.headers = headers
            self.body = body?.base64EncodedString()
        }
    }

    /// What a `fetch()` gave the page.
    struct Outcome: Decodable, Sendable {
        var name: String
        /// The status, when the browser let the page read the answer.
        var status: Int?
        /// The body, base64.
        var body: String?
        /// `Content-Disposition` as the page could read it (null unless exposed).
        var contentDisposition: String?
        /// The error `fetch()` rejected with (a `TypeError` when CORS refuses).
        var rejected: String?

        var bytes: Data? { self.body.flatMap { Data(base64Encoded: $0) } }
    }

    /// Why a page visit gave no report.
    struct NoReport: Error, CustomStringConvertible {
        var description: String
    }

    private enum Event: Sendable {
        case report(Data)
        case browserExited(Int32)
    }

    private let page = Mutex("")
    /// The visit in progress, which a report ends.
    private let visit = Mutex<AsyncStream<Event>.Continuation?>(nil)

    /// Serves the origin on a free loopback port for the duration of `body`, which receives the origin
    /// (`http://127.0.0.1:PORT`).
    func serve<Value: Sendable>(_ body: @Sendable (_ origin: String) async throws -> Value) async throws -> Value {
        let router = Router()
        router.get("page") { _, _ -> Response in
            let html = self.page.withLock { $0 }
            return Response(
                status: .ok,
                headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(string: html))
            )
        }
        router.post("report") { request, _ -> Response in
            let report = try await request.body.collect(upTo: 16 << 20)
            _ = self.visit.withLock { $0?.yield(.report(Data(report.readableBytesView))) }
            return Response(status: .noContent)
        }
        let app = Application(router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)))
        return try await app.test(.live) { client in
            guard let port = client.port else { throw NoReport(description: "the web client's origin has no port") }
            return try await body("http://127.0.0.1:\(port)")
        }
    }

    /// Opens the page in headless Chromium, which makes `calls` from this origin, and returns their outcomes by name.
    ///
    /// - Throws: ``NoReport`` when Chromium exits or `timeout` passes before the page reports.
    func visit(origin: String, making calls: [Call], timeout: Duration = .seconds(60)) async throws -> [String: Outcome] {
        let html = try Self.html(calls)
        self.page.withLock { $0 = html }
        let (events, continuation) = AsyncStream<Event>.makeStream()
        self.visit.withLock { $0 = continuation }
        defer {
            self.visit.withLock { $0 = nil }
            continuation.finish()
        }
        let browser = try await HeadlessChromium.open(url: "\(origin)/page") { status in continuation.yield(.browserExited(status)) }
        let event = await withTaskGroup(of: Event?.self) { group in
            group.addTask {
                for await event in events { return event }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        let status = await browser.close()
        switch event {
        case .report(let data):
            let outcomes = try JSONDecoder().decode([Outcome].self, from: data)
            return Dictionary(outcomes.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        case .browserExited(let code):
            throw NoReport(description: "chromium exited with status \(code) before the page reported:\n\(browser.log)")
        case nil:
            throw NoReport(
                description:
                    "no report from the page within \(timeout) (chromium closed with status \(status.map(String.init) ?? "killed")):\n\(browser.log)"
            )
        }
    }

    /// The page: runs the calls in order, then posts their outcomes to `/report` on its own origin.
    static func html(_ calls: [Call]) throws -> String {
        // JSONEncoder escapes "/", so no "</script>" can appear inside the script.
        let json = String(decoding: try JSONEncoder().encode(calls), as: UTF8.self)
        return """
            <!doctype html>
            <meta charset="utf-8">
            <title>Airlock web client test</title>
            <script>
            const calls = \(json);
            const base64 = (bytes) => { let text = ""; for (const byte of bytes) text += String.fromCharCode(byte); return btoa(text); };
            const unbase64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
            (async () => {
              const outcomes = [];
              for (const call of calls) {
                const init = { method: call.method, headers: call.headers, cache: "no-store" };
                if (call.body !== undefined && call.body !== null) init.body = unbase64(call.body);
                try {
                  const response = await fetch(call.url, init);
                  const bytes = new Uint8Array(await response.arrayBuffer());
                  outcomes.push({ name: call.name, status: response.status, body: base64(bytes),
                                  contentDisposition: response.headers.get("Content-Disposition") });
                } catch (error) {
                  outcomes.push({ name: call.name, rejected: String(error) });
                }
              }
              await fetch("/report", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(outcomes) });
            })();
            </script>
            """
    }
}
