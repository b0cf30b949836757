"""The error hierarchy. The API maps each class to one HTTP status in one place."""

from __future__ import annotations


class ReelrankError(Exception):
    """Base class of every error reelrank raises on purpose."""


class InvalidInput(ReelrankError):
    """A client sent something malformed; `field` names what to fix."""

    def __init__(self, field: str, message: str, text: str | None = None) -> None:
        super().__init__(text or f"{field}: {message}")
        self.field = field
        self.message = message


class TooLarge(InvalidInput):
    """A batch or body is over its size limit."""


class NotFound(ReelrankError):
    """The named record does not exist."""


class Conflict(ReelrankError):
    """The request is valid but the record's state does not allow it (a budget spent)."""


class ConfigError(ReelrankError):
    """A setting is unknown or has an invalid value."""


class StorageError(ReelrankError):
    """A store URL is unsupported or a backend failed."""
