"""The policy layer: filters that say what they removed, and selectors that decide."""
