internal import CClamAV
public import Logging

/// Process-wide facts about the linked libclamav.
public enum ClamAVLibrary {
    /// The version of the linked libclamav, for example `1.4.3`.
    public static var version: String {
        String(cString: cl_retver())
    }

    /// Initialises libclamav once for the process; later calls return the first outcome.
    ///
    /// Engines call this themselves; call it early to surface an initialisation failure at start-up.
    public static func initialize() throws(ClamAVError) {
        try clamAVInitialization.get()
    }

    /// The logger that receives libclamav's own messages (errors, warnings, verbose info as debug).
    public static let logger = Logger(label: "airlock.libclamav")
}

/// `cl_init` runs exactly once per process, through this lazily initialised global.
let clamAVInitialization: Result<Void, ClamAVError> = initializeClamAV()

private func initializeClamAV() -> Result<Void, ClamAVError> {
    // Route libclamav's messages to swift-log before anything can print to stderr.
    cl_set_clcb_msg { severity, _, message, _ in
        guard let message else { return }
        let text = String(cString: message).trimmingTrailingNewlines()
        switch severity {
        case CL_MSG_ERROR:
            ClamAVLibrary.logger.error("\(text)")
        case CL_MSG_WARN:
            ClamAVLibrary.logger.warning("\(text)")
        default:
            ClamAVLibrary.logger.debug("\(text)")
        }
    }
    let result = cl_init(UInt32(CL_INIT_DEFAULT))
    guard result == CL_SUCCESS else {
        return .failure(ClamAVError(operation: "cl_init", code: result))
    }
    return .success(())
}

extension String {
    fileprivate func trimmingTrailingNewlines() -> String {
        var text = Substring(self)
        while let last = text.last, last.isNewline {
            text = text.dropLast()
        }
        return String(text)
    }
}
