"""A/B experiments: layered deterministic bucketing and the statistics of arm results."""
