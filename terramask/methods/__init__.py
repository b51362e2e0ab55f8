"""Algorithms, written against the model protocols and plain arrays (no I/O, no geography)."""
