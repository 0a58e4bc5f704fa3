public import Hummingbird
public import NIOCore

/// The request context of every Airlock route: the authenticated IM server (when any) and the peer address.
public struct AirlockRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The IM server the bearer API key belongs to, set by ``APIKeyMiddleware``.
    public var server: String?
    /// The connected peer's address.
    public let remoteAddress: SocketAddress?
    /// The connection, to read the TLS peer certificate from.
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.remoteAddress = source.channel.remoteAddress
        self.channel = source.channel
        self.server = nil
    }
}
