// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "swift-cache-aside",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "CacheAside", targets: ["CacheAside"]),
        .library(name: "CacheAsidePostgres", targets: ["CacheAsidePostgres"]),
        .library(name: "CacheAsideRedis", targets: ["CacheAsideRedis"]),
        .library(name: "IOLoop", targets: ["IOLoop"]),
        .library(name: "CacheAsideTLS", targets: ["CacheAsideTLS"]),
        .library(name: "CacheAsideAWS", targets: ["CacheAsideAWS"]),
        .executable(name: "user-lookup", targets: ["UserLookup"]),
        .executable(name: "cache-bench", targets: ["CacheBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.1.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.0.0"),
    ],
    targets: [
        // C modules: touched only by their one Swift wrapper module (and the raw
        // baselines of the benchmark).
        .systemLibrary(
            name: "CLibpq",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"]), .brew(["libpq"])]
        ),
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"]), .brew(["openssl@3"])]
        ),
        .systemLibrary(
            name: "CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"]), .brew(["hiredis"])]
        ),

        // The event loop both clients share: readiness, wake-ups, timers. No protocol.
        .target(name: "CIOLoopShims"),
        .target(
            name: "IOLoop",
            dependencies: [
                "CIOLoopShims",
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        // OpenSSL's TLS and digests, for the clients and AWS authentication.
        .target(name: "CacheAsideTLS", dependencies: ["COpenSSL"]),
        // AWS SigV4 and the RDS and ElastiCache IAM token generators. Knows neither
        // client: a service wires a generator into a client's credentials provider.
        .target(name: "CacheAsideAWS", dependencies: ["CacheAsideTLS"]),
        .target(
            name: "CacheAsidePostgres",
            dependencies: [
                "CLibpq",
                "CacheAsideTLS",
                "IOLoop",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        .target(
            name: "CacheAsideRedis",
            dependencies: [
                "CHiredis",
                "CacheAsideTLS",
                "IOLoop",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        // The in-process tier's store of decoded values (used by CacheAside's memory
        // tiers; not a product of its own), and its benchmark (hit ratio, footprint, hit cost).
        .target(name: "CacheAsideMemory"),
        .target(name: "CMallocStatistics"),
        .executableTarget(
            name: "MemoryBench",
            dependencies: [
                "CacheAsideMemory",
                "CMallocStatistics",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(
            name: "CacheAside",
            dependencies: [
                "CacheAsideMemory",
                "CacheAsidePostgres",
                "CacheAsideRedis",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .executableTarget(
            name: "UserLookup",
            dependencies: [
                "CacheAside",
                "CacheAsidePostgres",
                "CacheAsideRedis",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "CacheBench",
            dependencies: [
                "CacheAside",
                "CacheAsidePostgres",
                "CacheAsideRedis",
                "CLibpq",
                "CHiredis",
                "CMallocStatistics",
                "ProcessRunner",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),

        // Runs helper programs (dev-services, redis-benchmark, pgbench) for the tests
        // and the benchmark; not part of the library.
        .target(name: "ProcessRunner"),
        .target(
            name: "TestSupport",
            dependencies: ["ProcessRunner"],
            path: "Tests/TestSupport"
        ),
        .testTarget(name: "IOLoopTests", dependencies: ["IOLoop"]),
        .testTarget(name: "TLSTests", dependencies: ["CacheAsideTLS", "IOLoop"]),
        .testTarget(
            name: "AWSTests", dependencies: ["CacheAsideAWS", "CacheAsidePostgres", "CacheAsideRedis"],
            resources: [.copy("Vectors")]),
        .testTarget(name: "PostgresTests", dependencies: ["CacheAsidePostgres", "CLibpq", "TestSupport"]),
        .testTarget(
            name: "RedisTests",
            dependencies: [
                "CacheAsideRedis", "CacheAsideTLS", "CHiredis", "ProcessRunner", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "MemoryTests", dependencies: ["CacheAsideMemory", "MemoryBench", "IOLoop", "ProcessRunner"]),
        .testTarget(
            name: "CacheAsideTests",
            dependencies: [
                "CacheAside", "CacheAsidePostgres", "CacheAsideRedis", "TestSupport",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
    ]
)
