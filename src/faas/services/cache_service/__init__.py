"""Cache service: tenant-scoped key/value cache with TTLs, tags and batch operations."""
