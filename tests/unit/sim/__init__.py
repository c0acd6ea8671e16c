"""Unit tests of pipeline.sim: the synthetic traffic generator."""
