internal import CClamAV

/// An error reported by libclamav, carrying its result code and its own message (`cl_strerror`).
public struct ClamAVError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The operation that failed, for example `cl_load(/var/lib/clamav)`.
    public let operation: String
    /// The numeric `cl_error_t` result code.
    public let code: UInt32
    /// libclamav's text for the code.
    public let message: String
    /// The signature file found to be at fault, when a load failed and the culprit could be identified.
    public let culprit: String?

    /// Whether the error is libclamav's scan time limit (`CL_ETIMEOUT`).
    public var isTimeout: Bool { self.code == CL_ETIMEOUT.rawValue }

    init(operation: String, code: cl_error_t, culprit: String? = nil) {
        self.operation = operation
        self.code = code.rawValue
        self.message = String(cString: cl_strerror(code))
        self.culprit = culprit
    }

    public var description: String {
        var text = "\(self.operation) failed: \(self.message) (libclamav code \(self.code))"
        if let culprit {
            text += "; the faulty signature file is \(culprit)"
        }
        return text
    }
}

/// Maps a libclamav result code to success or a ``ClamAVError``; the one place that does so.
///
/// `CL_VIRUS` is not an error and must be handled by the caller before calling this.
@inline(__always)
func check(_ result: cl_error_t, _ operation: @autoclosure () -> String) throws(ClamAVError) {
    guard result == CL_SUCCESS else {
        throw ClamAVError(operation: operation(), code: result)
    }
}
