"""Unit tests of pipeline.metrics: labels, state collectors, step metrics."""
