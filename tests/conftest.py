"""Shared fixtures: real engines over real stores, and the real app behind a test client."""

from __future__ import annotations

import itertools
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from reelrank.config import Settings, load_settings
from reelrank.engine import Engine
from reelrank.serve import create_app
from reelrank.services import feed as feed_service

INGEST_KEY = "test-ingest"
FEED_KEY = "test-feed"
ADMIN_KEY = "test-admin"
KEYS = f"{INGEST_KEY}=ingest;{FEED_KEY}=feed;{ADMIN_KEY}=admin"
INGEST = {"Authorization": f"Bearer {INGEST_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}

_ids = itertools.count()


def make_settings(tmp_path: Path, store: str = "memory://", **overrides: Any) -> Settings:
    """Settings isolated from the developer's environment."""
    overrides.setdefault("api_keys", KEYS)
    overrides.setdefault("trending_refresh_s", 0.05)
    overrides.setdefault("trainer", "off")  # tests that train say so
    overrides.setdefault("content_embedder", "hashed")  # MiniLM's own tests ask for it
    # A busy test machine must not drop channels from pages; the budget's own test sets it.
    overrides.setdefault("recall_budget_ms", 2000.0)
    return load_settings(env={}, data_dir=str(tmp_path), store=store, **overrides)


def video(i: int | str, **fields: Any) -> dict[str, Any]:
    """A valid video record; fields override the defaults."""
    base: dict[str, Any] = {
        "id": f"v{i}",
        "creator_id": f"c{i}",
        "caption": f"clip {i}",
        "hashtags": ["misc"],
        "sound_id": f"s{i}",
        "duration_ms": 15_000,
        "language": "en",
        "region": "us",
    }
    base.update(fields)
    return base


def event(kind: str, user: str, vid: str, **fields: Any) -> dict[str, Any]:
    """A valid event with a fresh event_id."""
    base: dict[str, Any] = {
        "event_id": f"e{next(_ids)}-{time.time_ns()}",
        "type": kind,
        "user_id": user,
        "video_id": vid,
        "ts": time.time(),
    }
    base.update(fields)
    return base


@pytest.fixture(autouse=True)
def _deterministic_request_ids(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Feed request ids seed exploration and tie-breaks: number them per test, so a
    failure replays the same pages."""
    counter = itertools.count()
    prefix = f"{zlib.crc32(request.node.nodeid.encode()):08x}"
    monkeypatch.setattr(feed_service, "new_request_id", lambda: f"{prefix}-{next(counter)}")


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'rr.db'}"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(make_settings(tmp_path)).open()
    yield eng
    eng.close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """The real app over a real SQLite file."""
    settings = make_settings(tmp_path, store=f"sqlite:///{tmp_path / 'api.db'}")
    app = create_app(Engine(settings), own_engine=True)
    with TestClient(app) as c:
        yield c


def train_retrieval(eng: Engine, users: list[str], rounds: int = 3) -> None:
    """Serve pages to `users`, finish every served video, train a model on that traffic
    and load it into serving with its two-tower and sequence indexes (needs
    model_min_examples <= the examples this makes)."""
    from reelrank.train.trainer import OnlineTrainer

    trainer = OnlineTrainer(eng.settings, eng.store, eng.params)
    for _ in range(rounds):
        for user in users:
            page = eng.feed(user, n=5)
            eng.ingest(
                [
                    event("finish", user, it.video_id, request_id=page.request_id)
                    for it in page.items
                ]
            )
        eng.flush_impressions()
        trainer.step()
    trainer.drain()
    trainer.publish_full()
    eng.model.poll()
    assert eng.retrieval.refresh(force=True)
    assert eng.sequence.refresh(force=True)
