public import Foundation

/// What /proc says about processes: the scanner processes a broker started, their open files, their status.
public enum ProcessTable {
    /// The pids of `airlock scanner-process` children of `parent`.
    public static func scannerProcesses(of parent: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return false }
            // Fields after the command name: state, ppid, ...
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 2, Int32(fields[1]) == parent, fields[0] != "Z" else { return false }
            let command = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
            return String(decoding: command, as: UTF8.self).contains("scanner-process")
        }
    }

    /// The paths of the files `pid` has open.
    public static func openFiles(of pid: Int32) -> [String] {
        let directory = "/proc/\(pid)/fd"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "\(directory)/\($0)") }
    }

    /// `/proc/<pid>/status` as a dictionary (`NoNewPrivs`, `Seccomp`, `Uid`, ...).
    public static func status(of pid: Int32) -> [String: String] {
        let text = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        var fields: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            fields[String(line[..<colon])] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return fields
    }

    /// The environment `pid` was started with.
    public static func environment(of pid: Int32) -> [String] {
        let data = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ"))) ?? Data()
        return data.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
    }

    /// Polls `condition` (the state of another process, which sends no event) until it returns a value, or nil
    /// after `timeout` seconds.
    public static func waitFor<Value>(timeout: TimeInterval, _ condition: () -> Value?) async -> Value? {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while Date() < deadline {
            if let value = condition() { return value }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return condition()
    }
}
