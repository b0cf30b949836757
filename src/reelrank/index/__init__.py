"""Vector indexes: exact and approximate nearest-neighbour search by inner product."""
