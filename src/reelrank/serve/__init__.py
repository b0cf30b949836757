"""The HTTP API: parse, call the engine, map errors; nothing else."""

from .app import create_app

__all__ = ["create_app"]
