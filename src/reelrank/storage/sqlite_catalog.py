"""The embedded catalog: videos, users, follows, controls, the audit log and the change
feed every write appends to in its own transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import orjson

from ..schema import AuditEntry, Follow, User, Video
from .base import CONTROLS, FOLLOWS, USERS, VIDEOS, CatalogChange
from .sqlite_db import Database


def record_changes(
    conn: sqlite3.Connection, origin: str, changes: list[tuple[str, str, Any]]
) -> None:
    """Append catalog changes inside the caller's write transaction."""
    if changes:
        conn.executemany(
            "INSERT INTO catalog_changes (tbl, key, body, origin) VALUES (?, ?, ?, ?)",
            [(t, k, None if b is None else orjson.dumps(b), origin) for t, k, b in changes],
        )


def set_follow(
    conn: sqlite3.Connection, origin: str, user_id: str, creator_id: str, on: bool
) -> bool:
    """Add or remove one edge inside the caller's transaction, recording the change when
    the edge changed; True when it did."""
    if on:
        sql = "INSERT OR IGNORE INTO follows (user_id, creator_id) VALUES (?, ?)"
    else:
        sql = "DELETE FROM follows WHERE user_id = ? AND creator_id = ?"
    changed = conn.execute(sql, (user_id, creator_id)).rowcount == 1
    if changed:
        record_changes(
            conn, origin, [(FOLLOWS, user_id, {"creator_id": creator_id, "following": on})]
        )
    return changed


class SQLiteCatalog:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.origin = db.origin

    def upsert_videos(self, videos: list[Video]) -> list[tuple[int, bool]]:
        out: list[tuple[int, bool]] = []
        with self._db.write() as conn:
            for video in videos:
                body = orjson.dumps(video.model_dump(mode="json"))
                found = conn.execute("SELECT row FROM videos WHERE id = ?", (video.id,)).fetchone()
                if found:
                    conn.execute("UPDATE videos SET body = ? WHERE row = ?", (body, found[0]))
                    out.append((found[0], False))
                else:
                    cur = conn.execute(
                        "INSERT INTO videos (row, id, body) VALUES "
                        "((SELECT COALESCE(MAX(row), -1) + 1 FROM videos), ?, ?)",
                        (video.id, body),
                    )
                    out.append((int(cur.lastrowid or 0), True))
            record_changes(conn, self._db.origin, [(VIDEOS, v.id, None) for v in videos])
        return out

    def get_video(self, video_id: str) -> tuple[int, Video] | None:
        with self._db.lock:
            found = self._db.conn.execute(
                "SELECT row, body FROM videos WHERE id = ?", (video_id,)
            ).fetchone()
        return (found[0], Video.model_validate_json(found[1])) if found else None

    def iter_videos(self) -> Iterator[tuple[int, Video]]:
        with self._db.lock:
            rows = self._db.conn.execute("SELECT row, body FROM videos ORDER BY row").fetchall()
        for row, body in rows:
            yield row, Video.stored(orjson.loads(body))

    def upsert_users(self, users: list[User]) -> list[bool]:
        out = []
        with self._db.write() as conn:
            for user in users:
                body = orjson.dumps(user.model_dump(mode="json"))
                cur = conn.execute(
                    "INSERT INTO users (id, body) VALUES (?, ?) ON CONFLICT(id) DO NOTHING",
                    (user.id, body),
                )
                created = cur.rowcount == 1
                if not created:
                    conn.execute("UPDATE users SET body = ? WHERE id = ?", (body, user.id))
                out.append(created)
            record_changes(conn, self._db.origin, [(USERS, u.id, None) for u in users])
        return out

    def get_user(self, user_id: str) -> User | None:
        with self._db.lock:
            found = self._db.conn.execute(
                "SELECT body FROM users WHERE id = ?", (user_id,)
            ).fetchone()
        return User.model_validate_json(found[0]) if found else None

    def iter_users(self) -> Iterator[User]:
        with self._db.lock:
            rows = self._db.conn.execute("SELECT body FROM users").fetchall()
        for (body,) in rows:
            yield User.stored(orjson.loads(body))

    def add_follows(self, follows: list[Follow]) -> list[bool]:
        out = []
        with self._db.write() as conn:
            for f in follows:
                out.append(set_follow(conn, self._db.origin, f.user_id, f.creator_id, True))
        return out

    def remove_follow(self, user_id: str, creator_id: str) -> bool:
        with self._db.write() as conn:
            return set_follow(conn, self._db.origin, user_id, creator_id, False)

    def iter_follows(self) -> Iterator[Follow]:
        with self._db.lock:
            rows = self._db.conn.execute("SELECT user_id, creator_id FROM follows").fetchall()
        for user_id, creator_id in rows:
            yield Follow(user_id=user_id, creator_id=creator_id)

    def put_control(self, kind: str, key: str, body: dict[str, Any]) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO controls (kind, key, body) VALUES (?, ?, ?) "
                "ON CONFLICT(kind, key) DO UPDATE SET body = excluded.body",
                (kind, key, orjson.dumps(body)),
            )
            record_changes(conn, self._db.origin, [(CONTROLS, key, {"kind": kind})])

    def iter_controls(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        with self._db.lock:
            rows = self._db.conn.execute(
                "SELECT key, body FROM controls WHERE kind = ? ORDER BY key", (kind,)
            ).fetchall()
        for key, body in rows:
            yield key, orjson.loads(body)

    def get_control(self, kind: str, key: str) -> dict[str, Any] | None:
        with self._db.lock:
            found = self._db.conn.execute(
                "SELECT body FROM controls WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
        return orjson.loads(found[0]) if found else None

    def changes(self, after: int, limit: int) -> list[CatalogChange]:
        with self._db.lock:
            rows = self._db.conn.execute(
                "SELECT seq, tbl, key, body, origin FROM catalog_changes WHERE seq > ? "
                "ORDER BY seq LIMIT ?",
                (after, limit),
            ).fetchall()
        return [
            CatalogChange(seq, tbl, key, None if body is None else orjson.loads(body), origin)
            for seq, tbl, key, body, origin in rows
        ]

    def last_change(self) -> int:
        with self._db.lock:
            (last,) = self._db.conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM catalog_changes"
            ).fetchone()
        return int(last)

    def append_audit(self, entries: list[AuditEntry]) -> list[int]:
        out = []
        with self._db.write() as conn:
            for e in entries:
                cur = conn.execute(
                    "INSERT INTO audit (ts, actor, action, target_kind, target_id, reason, "
                    "detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        e.ts,
                        e.actor,
                        e.action,
                        e.target_kind,
                        e.target_id,
                        e.reason,
                        None if e.detail is None else orjson.dumps(e.detail),
                    ),
                )
                out.append(int(cur.lastrowid or 0))
        return out

    def read_audit(
        self, target_kind: str | None, target_id: str | None, before: int | None, limit: int
    ) -> list[AuditEntry]:
        where: list[str] = []
        args: list[Any] = []
        if target_kind is not None:
            where.append("target_kind = ?")
            args.append(target_kind)
        if target_id is not None:
            where.append("target_id = ?")
            args.append(target_id)
        if before is not None:
            where.append("seq < ?")
            args.append(before)
        sql = "SELECT seq, ts, actor, action, target_kind, target_id, reason, detail FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        with self._db.lock:
            rows = self._db.conn.execute(sql, (*args, limit)).fetchall()
        return [
            AuditEntry(
                seq=r[0],
                ts=r[1],
                actor=r[2],
                action=r[3],
                target_kind=r[4],
                target_id=r[5],
                reason=r[6],
                detail=None if r[7] is None else orjson.loads(r[7]),
            )
            for r in rows
        ]
