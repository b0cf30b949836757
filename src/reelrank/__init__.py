"""reelrank: a real-time For You feed engine for short-video apps."""

__version__ = "0.1.0"
