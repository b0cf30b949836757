"""The library facade: `Engine` builds one process of reelrank (`services/app.py`, the
composition root) and hands each call to its service.

The CLI and the HTTP layer only parse input, call these methods and map errors.
"""

from __future__ import annotations

from .errors import ReelrankError
from .services.app import Engine

__all__ = ["Engine", "ReelrankError"]
