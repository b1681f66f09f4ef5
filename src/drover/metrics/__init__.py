"""Metrics, each following a named reference implementation exactly (see each module)."""
