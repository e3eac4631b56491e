// The CacheAside module.
