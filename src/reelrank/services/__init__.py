"""Use cases, one service each (catalog, users, events, feed, experiments, views), and
`app.py`, the composition root that builds them for a process's roles."""
