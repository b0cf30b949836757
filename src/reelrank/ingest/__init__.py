"""Validate, deduplicate, append durably, then fold into the online state."""
