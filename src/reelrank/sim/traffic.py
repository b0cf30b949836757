"""Simulated viewers that use a running server over HTTP, as a real app would."""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from collections.abc import Callable

import httpx
import numpy as np

from .world import World, react


class Traffic:
    """Loads a world into a server, then runs viewer threads until stopped."""

    def __init__(self, base_url: str, ingest_key: str, world: World, viewers: int = 4) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {ingest_key}"}
        self.world = world
        self.n_threads = viewers
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.feeds = 0
        self.events = 0
        self.items = 0
        self.matches = 0
        self.latencies: deque[float] = deque(maxlen=2000)
        self.recent_match: deque[int] = deque(maxlen=2000)
        self.errors = 0
        self.ranker = "?"

    def load(self, say: Callable[[str], None] = print) -> None:
        """Send the catalog and users through the public API."""
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=60) as c:
            videos = self.world.videos
            for i in range(0, len(videos), 1000):
                c.post("/v1/videos", json={"videos": videos[i : i + 1000]}).raise_for_status()
            say(f"loaded {len(videos)} videos")
            users = [
                {"id": v.id, "region": v.region, "interests": v.interests}
                for v in self.world.viewers
            ]
            for i in range(0, len(users), 1000):
                c.post("/v1/users", json={"users": users[i : i + 1000]}).raise_for_status()
            say(f"loaded {len(users)} users")

    def _viewer_loop(self, k: int) -> None:
        rng = np.random.default_rng(1000 + k)
        by_id = {v["id"]: v for v in self.world.videos}
        viewers = self.world.viewers[k :: self.n_threads]
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=30) as c:
            while not self.stop.is_set() and viewers:
                viewer = viewers[int(rng.integers(len(viewers)))]
                try:
                    t0 = time.perf_counter()
                    r = c.get(f"/v1/feed/{viewer.id}", params={"n": 8})
                    latency = time.perf_counter() - t0
                    r.raise_for_status()
                    page = r.json()
                    events, hits = [], 0
                    now = time.time()
                    for item in page["items"]:
                        vid = item["video_id"]
                        topic = self.world.topic_of.get(vid)
                        if topic is None:  # uploaded through the API, not by this world
                            continue
                        hits += viewer.likes_topic(topic) > 0.5
                        events += react(
                            viewer,
                            by_id[vid],
                            topic,
                            self.world.quality[vid],
                            rng,
                            page["request_id"],
                            now,
                        )
                    if events:
                        c.post("/v1/events", json={"events": events}).raise_for_status()
                except httpx.HTTPError:
                    with self.lock:
                        self.errors += 1
                    self.stop.wait(0.5)
                    continue
                with self.lock:
                    self.feeds += 1
                    self.events += len(events)
                    self.items += len(page["items"])
                    self.latencies.append(latency)
                    self.recent_match.extend([1] * hits + [0] * (len(page["items"]) - hits))
                    self.ranker = f"{page.get('ranker', '?')} {page['model_version']}"
                self.stop.wait(0.02)

    def start(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self._viewer_loop, args=(k,), daemon=True, name=f"viewer-{k}")
            for k in range(self.n_threads)
        ]
        for t in threads:
            t.start()
        return threads

    def report(
        self, elapsed: float, last: tuple[int, int, float]
    ) -> tuple[str, tuple[int, int, float]]:
        """A progress line, and the counts to diff against next time."""
        with self.lock:
            feeds, events = self.feeds, self.events
            lat = sorted(self.latencies)
            match = statistics.fmean(self.recent_match) if self.recent_match else 0.0
            errors = self.errors
            ranker = self.ranker
        now = time.monotonic()
        dt = max(now - last[2], 1e-9)
        p50 = lat[len(lat) // 2] * 1000 if lat else 0.0
        line = (
            f"[{elapsed:6.0f}s] feeds {feeds} ({(feeds - last[0]) / dt:.0f}/s)  "
            f"events {events} ({(events - last[1]) / dt:.0f}/s)  feed p50 {p50:.1f} ms  "
            f"matching the viewer's taste {match:.0%}  ranker {ranker}"
            + (f"  errors {errors}" if errors else "")
        )
        return line, (feeds, events, now)
