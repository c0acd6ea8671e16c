"""Unit tests of pipeline.durability: key scheme, restore, processor, crash points."""
