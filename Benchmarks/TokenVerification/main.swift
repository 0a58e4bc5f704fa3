import AirlockCore
import Foundation

// Token verification rate (DESIGN §7: ≥ 200,000 per second per core): verifies valid download tokens in a loop
// on one task, then on one task per core, and prints verifications per second.
//
//   swift run -c release airlock-token-benchmark [SECONDS_PER_RUN]        (default 3)

let seconds = CommandLine.arguments.dropFirst().first.flatMap(Double.init) ?? 3
let cores = ProcessInfo.processInfo.activeProcessorCount
var configuration = AirlockConfiguration.development.tokens
configuration.keys = ["k1": Data((0..<32).map { UInt8($0) }), "k2": Data((32..<64).map { UInt8($0) })]
configuration.activeKeyId = "k2"
let tokens = DownloadTokens(configuration)
let now = Date()
// Distinct tokens, as a server sees them.
var samples: [String] = []
for index in 0..<1024 {
    samples.append(
        try tokens.issue(transferId: UUID().uuidString.lowercased(), recipient: "user\(index)@example.org", ttl: 3600, now: now).token
    )
}
let pool = samples

/// Verifies tokens for `seconds` on one task; returns how many were verified.
@Sendable func verifyLoop(offset: Int) async -> Int {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    var count = 0
    var index = offset
    while ContinuousClock.now < deadline {
        for _ in 0..<256 {
            guard (try? tokens.verify(pool[index & 1023], now: now)) != nil else { fatalError("a valid token was refused") }
            index &+= 1
        }
        count += 256
    }
    return count
}

// Warm up.
_ = try tokens.verify(pool[0], now: now)

let single = await verifyLoop(offset: 0)
let parallel = await withTaskGroup(of: Int.self) { group in
    for core in 0..<cores {
        group.addTask { await verifyLoop(offset: core * 97) }
    }
    var total = 0
    for await count in group { total += count }
    return total
}
let singleRate = Double(single) / seconds
let parallelRate = Double(parallel) / seconds
print("machine: \(cores) cores; \(String(format: "%.0f", seconds)) s per run; HS256 tokens, 2 keys configured")
print("")
print("| run | verifications/s | per core |")
print("| --- | --- | --- |")
print("| 1 task | \(String(format: "%.0f", singleRate)) | \(String(format: "%.0f", singleRate)) |")
print("| \(cores) tasks | \(String(format: "%.0f", parallelRate)) | \(String(format: "%.0f", parallelRate / Double(cores))) |")
print("")
print("target: ≥ 200,000 per second per core")
