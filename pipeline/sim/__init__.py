"""Synthetic traffic: the generator and sample messages."""
