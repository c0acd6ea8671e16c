"""Unit tests of pipeline.ingest: validation, dead letters, the schema contract."""
