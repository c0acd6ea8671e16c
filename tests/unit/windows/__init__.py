"""Unit tests of pipeline.windows: arithmetic, watermarks, aggregator, rates, thresholds."""
