"""Durability: the changelog key scheme (and, to come, the partition processor)."""
