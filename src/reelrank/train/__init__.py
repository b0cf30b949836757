"""Real-time learning: sample joiner, embedding tables, online trainer, parameter sync."""
