"""Getting events in: validation, dead letters, and the partition that owns an account."""
