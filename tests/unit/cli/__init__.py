"""Unit tests of pipeline.cli: replay and settle without a broker."""
