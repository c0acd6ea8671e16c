"""Prometheus: the one metrics factory, bounded labels, and gauges read from state when scraped."""
