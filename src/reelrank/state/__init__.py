"""Online state: the in-memory catalog, per-video counters and per-user profiles."""
