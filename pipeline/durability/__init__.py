"""Durability: the changelog key scheme, restore from its records, and the partition processor."""
