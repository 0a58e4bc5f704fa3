import Logging
import PostgresNIO
import Synchronization

/// Statements that end a transaction (BEGIN, COMMIT, ROLLBACK) fail when their connection closes before they are
/// answered, instead of waiting for an answer that cannot come.
///
/// postgres-nio 1.33.2 sends a query with `channel.write(_:promise: nil)`: on a connection the server has closed
/// meanwhile the write is dropped and the query's promise is never completed, so `query` waits forever. A transaction
/// holds its connection through blocking work (file moves into the store, a group's `syncfs`), and a server that
/// ends the connection then (a restart, a fail-over, `pg_terminate_backend`) would leave the COMMIT, and with it
/// the whole group committer, waiting for good. One close callback per connection fails whatever it still owes.
final class ClosedConnectionWatch: Sendable {
    private struct State {
        /// Statements waiting for an answer, per connection; a connection has an entry (perhaps empty) from its first
        /// statement, when its close callback is registered, until that callback runs.
        var waiting: [Int: [UInt64: (statement: String, continuation: CheckedContinuation<Void, any Error>)]] = [:]
        var nextTicket: UInt64 = 0
    }

    /// A statement's connection closed before it was answered: nothing after the last answered statement
    /// happened, and a COMMIT that was sent may or may not have (as with any connection lost during a commit).
    struct ConnectionClosed: Error, CustomStringConvertible {
        var statement: String
        var description: String {
            "the connection to PostgreSQL closed before \(statement) was answered (server restart, fail-over or terminated backend)"
        }
    }

    private let state = Mutex(State())

    /// Runs `statement` on `connection`; throws ``ConnectionClosed`` when the connection is or becomes closed first.
    func execute(_ statement: String, on connection: PostgresConnection, logger: Logger) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            // Registered before the close is checked: a close after the check finds the ticket and fails it; a close
            // before it is seen by `isClosed` (the channel is inactive before its close future completes).
            let (ticket, watch) = self.state.withLock { state -> (UInt64, Bool) in
                state.nextTicket += 1
                let firstStatement = state.waiting[connection.id] == nil
                state.waiting[connection.id, default: [:]][state.nextTicket] = (statement, continuation)
                return (state.nextTicket, firstStatement)
            }
            if watch {
                connection.closeFuture.whenComplete { _ in self.failAll(on: connection.id) }
            }
            if connection.isClosed {
                self.finish(ticket, on: connection.id, with: .failure(ConnectionClosed(statement: statement)))
                return
            }
            Task {
                do {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                    self.finish(ticket, on: connection.id, with: .success(()))
                } catch {
                    self.finish(ticket, on: connection.id, with: .failure(error))
                }
            }
        }
    }

    private func finish(_ ticket: UInt64, on connection: Int, with result: Result<Void, any Error>) {
        let waiting = self.state.withLock { state in state.waiting[connection]?.removeValue(forKey: ticket) }
        waiting?.continuation.resume(with: result)
    }

    private func failAll(on connection: Int) {
        let waiting = self.state.withLock { state in state.waiting.removeValue(forKey: connection).map { Array($0.values) } ?? [] }
        for (statement, continuation) in waiting {
            continuation.resume(throwing: ConnectionClosed(statement: statement))
        }
    }
}
