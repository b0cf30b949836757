"""Content lifecycle: review now; duplicates and traffic pools later."""
