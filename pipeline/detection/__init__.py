"""Spike and drop detection: detector, the series it reads, settings, backtest, NAB scores."""
