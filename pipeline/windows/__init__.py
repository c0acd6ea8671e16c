"""Event-time windows: arithmetic, watermark and valve, aggregator, state, rates, thresholds."""
