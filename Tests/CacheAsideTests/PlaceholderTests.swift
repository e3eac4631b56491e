import CacheAside
import Testing

// The cache-aside tests arrive with the [cache-core] issue.
