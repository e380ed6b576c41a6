"""Low-level I/O: atomic writes, fsync, locks, the flusher, mount detection."""
