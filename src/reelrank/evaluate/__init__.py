"""Offline evaluation: replay a timestamped interaction log through the engine and
reference systems, test then train, with ranking and catalog metrics."""
