// swift-tools-version:6.0
import PackageDescription

// The same statement as cache-bench's pg_select rows, on vapor/postgres-nio: a package of
// its own, so that nothing a consumer of swift-cache-aside's libraries resolves or builds
// depends on PostgresNIO. `make bench` builds it (release) and cache-bench runs it.
let package = Package(
    name: "PostgresNIOBench",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/vapor/postgres-nio.git", exact: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.25.0"),
    ],
    targets: [
        .executableTarget(
            name: "PostgresNIOBench",
            dependencies: [
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ]
        ),
    ]
)
