import HTTPTypes
import NIOCore
import NIOHTTPTypes

/// Answers `Expect: 100-continue` with an interim `100 Continue`, so clients that ask (curl does for bodies over
/// 1 MiB) start sending at once instead of waiting out their own timeout (one second for curl). Hummingbird does
/// not send it.
///
/// A request whose Content-Length is already over the upload limit gets no `100 Continue`: its final `413`
/// arrives before any of the body is sent (RFC 9110 §10.1.1).
final class ExpectContinueHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private let maxBodyBytes: Int

    init(maxBodyBytes: Int) {
        self.maxBodyBytes = maxBodyBytes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let request) = self.unwrapInboundIn(data),
            request.headerFields[.expect]?.lowercased() == "100-continue",
            (request.headerFields[.contentLength].flatMap { Int($0) } ?? 0) <= self.maxBodyBytes
        {
            context.writeAndFlush(self.wrapOutboundOut(.head(HTTPResponse(status: .continue))), promise: nil)
        }
        context.fireChannelRead(data)
    }
}
