"""Unit tests of pipeline.detection: the detector, its series, settings, backtests, NAB."""
