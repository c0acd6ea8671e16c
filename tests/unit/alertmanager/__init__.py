"""Unit tests of pipeline.alertmanager: payloads, delivery decisions, offsets, metrics."""
