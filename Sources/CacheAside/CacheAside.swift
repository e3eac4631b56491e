import Foundation

extension UUID: CacheIdentifier {
    /// The lower-case canonical form.
    public var cacheKeyComponent: String { uuidString.lowercased() }
}
