"""Composes the stages; no business logic lives here."""
