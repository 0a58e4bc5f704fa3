// swift-tools-version:6.1
import PackageDescription

// libFuzzer targets for Airlock's parsers (issue 7). Build and run them with `scripts/fuzz.sh`; by hand:
//   swift build -c debug --sanitize fuzzer --sanitize address --package-path Fuzz
//   Fuzz/.build/debug/FuzzFilename -max_total_time=60 <copy of Fuzz/Corpus/FuzzFilename>
// SwiftPM's `--sanitize fuzzer` (rather than `-Xswiftc -sanitize=fuzzer -Xswiftc -parse-as-library`) renames each
// executable's entry point so that libFuzzer's `main` runs; see swiftlang/swift-package-manager#8731.

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "AirlockFuzz",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "airlock", path: ".."),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/vapor/jwt-kit.git", from: "5.7.1"),
    ],
    targets: [
        .target(
            name: "FuzzSupport",
            dependencies: [.product(name: "AirlockCore", package: "airlock")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "FuzzDownloadToken",
            dependencies: [
                "FuzzSupport",
                .product(name: "AirlockCore", package: "airlock"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "FuzzXEP0363Path",
            dependencies: [
                "FuzzSupport",
                .product(name: "AirlockCore", package: "airlock"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "FuzzConfiguration",
            dependencies: ["FuzzSupport", .product(name: "AirlockCore", package: "airlock")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "FuzzFilename",
            dependencies: ["FuzzSupport", .product(name: "AirlockCore", package: "airlock")],
            swiftSettings: swiftSettings
        ),
    ]
)
