"""Unit tests of pipeline.responses: pairing, SLAs, business hours, settings."""
