"""Unit tests of pipeline.model: records and the wire format."""
