import AirlockTestSupport
import Foundation

/// Runs the built `airlock` executable, which sits beside this test bundle, from the package root.
enum AirlockCommand {
    static let executable: String = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        .deletingLastPathComponent().appendingPathComponent("airlock").path

    /// Only the bundled signatures, whatever else the machine holds, so verdicts can be compared with clamscan's.
    static let hermetic = ["AIRLOCK_SCANNER_SIGNATURE_DIRECTORIES": Fixtures.signatureDirectory]

    static func run(_ arguments: [String], environment: [String: String] = hermetic) async throws -> ProcessRunner.Result {
        try await ProcessRunner.run(self.executable, arguments, in: Fixtures.packageRoot.path, environment: environment)
    }
}
