"""Bearer API keys with scopes: ingest, feed, admin (admin grants every scope)."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request


class KeyRing:
    def __init__(self, keys: dict[str, frozenset[str]], feed_requires_key: bool) -> None:
        self.keys = keys
        self.feed_requires_key = feed_requires_key

    def scopes_of(self, presented: str) -> frozenset[str] | None:
        found = None
        for key, scopes in self.keys.items():
            if hmac.compare_digest(key.encode(), presented.encode()):
                found = scopes
        return found

    def check(self, request: Request, scope: str) -> None:
        """Raise 401 (no or unknown key) or 403 (key lacks the scope)."""
        if scope == "feed" and not self.feed_requires_key:
            return
        if not self.keys:
            raise HTTPException(
                401,
                f"this server has no API keys configured, so {scope} calls are refused; "
                "set REELRANK_API_KEYS (e.g. 'k1=ingest,feed;k2=admin')",
                headers={"WWW-Authenticate": "Bearer"},
            )
        header = request.headers.get("authorization", "")
        kind, _, presented = header.partition(" ")
        if kind.lower() != "bearer" or not presented.strip():
            raise HTTPException(
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        scopes = self.scopes_of(presented.strip())
        if scopes is None:
            raise HTTPException(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
        if scope not in scopes and "admin" not in scopes:
            raise HTTPException(403, f"this API key lacks the {scope!r} scope")
