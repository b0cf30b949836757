"""The settings that are small languages of their own: a process's roles and the API
keys with their scopes (`config.py` reads them through these parsers)."""

from __future__ import annotations

from .errors import ConfigError

SCOPES = ("ingest", "feed", "admin")
ROLES = ("api", "worker", "lifecycle", "trainer")  # a process's parts, `roles`


def parse_roles(spec: str, store_url: str) -> frozenset[str]:
    """`api,worker,lifecycle` -> that set; `all` -> every role. Over an embedded store the
    online state is the serving process's own, so the roles that read or write it run
    together there."""
    names = {r.strip().lower() for r in spec.split(",") if r.strip()}
    if names == {"all"}:
        return frozenset(ROLES)
    unknown = sorted(names - set(ROLES))
    if not names or unknown:
        raise ConfigError(
            f"setting roles: unknown or no roles {unknown}; use all or some of {', '.join(ROLES)}"
        )
    stateful = names & {"api", "worker", "lifecycle"}
    embedded = store_url.startswith(("sqlite:", "memory:"))
    if embedded and stateful and stateful != {"api", "worker", "lifecycle"}:
        raise ConfigError(
            f"setting roles: {','.join(sorted(names))} over {store_url.split(':')[0]}:// would "
            "split the online state, which lives in the serving process there: run api, "
            "worker and lifecycle together (or all), and the trainer alone if you like"
        )
    return frozenset(names)


def parse_api_keys(spec: str) -> dict[str, frozenset[str]]:
    """`k1=ingest,feed;k2=admin` -> {"k1": {"ingest", "feed"}, "k2": {"admin"}}."""
    keys: dict[str, frozenset[str]] = {}
    for part in spec.split(";"):
        part = part.strip()
        if not part:
            continue
        key, sep, scopes = part.partition("=")
        key = key.strip()
        if key in keys:
            raise ConfigError(f"api_keys: key {key[:4]}… is listed twice")
        if not sep or not key:
            raise ConfigError(f"api_keys: expected key=scope[,scope] but got {part!r}")
        names = {s.strip() for s in scopes.split(",") if s.strip()}
        unknown = names - set(SCOPES)
        if not names or unknown:
            raise ConfigError(
                f"api_keys: key {key[:4]}… has unknown or no scopes {sorted(unknown)}; "
                f"use {', '.join(SCOPES)}"
            )
        keys[key] = frozenset(names)
    return keys
