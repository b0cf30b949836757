"""Scorers: one score per candidate, same order; they never drop or reorder."""
