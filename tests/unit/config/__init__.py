"""Unit tests of pipeline.config: settings, loading, checks, security."""
