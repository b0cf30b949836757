"""How long the online-state snapshot holds the state's writer lock, the lock every event
batch and every served page waits for.

Builds an engine on the embedded SQLite store with `--users` users who each engaged with
`--events-per-user` videos, takes a first snapshot, then `--rounds` times lets
`--active-share` of the users engage once more (the users active between two snapshots)
and takes another. A prober thread takes and releases the writer lock every half
millisecond throughout; what it reports is the longest it waited during each snapshot:
the stall a request that needs the lock (an event batch, a recorded page) would see.
Then it restarts the engine on the same store, lets the same share of users engage, and
measures the first snapshot after the restart the same way.

Prints one line per snapshot and writes benchmarks/results/bench_snapshot.json with the
commit measured and the load average. Run: `python benchmarks/bench_snapshot.py`; to
compare with another commit, run the same script from a checkout of it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))
from benchmarks.suite import git_state  # noqa: E402

from reelrank.config import load_settings  # noqa: E402
from reelrank.engine import Engine  # noqa: E402

BATCH = 1000


class Prober(threading.Thread):
    """Takes and releases `lock` in a loop; `worst()` is the longest wait since `reset()`."""

    def __init__(self, lock: Any) -> None:
        super().__init__(name="bench-prober", daemon=True)
        self.lock = lock
        self.stop = threading.Event()
        self._worst = 0.0

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            with self.lock:
                pass
            self._worst = max(self._worst, time.perf_counter() - started)
            time.sleep(0.0005)

    def reset(self) -> None:
        self._worst = 0.0

    def worst(self) -> float:
        return self._worst


def _events(users: np.ndarray, videos: np.ndarray, ts: float, tag: str) -> list[dict[str, Any]]:
    kinds = ("finish", "like", "watch")
    return [
        {
            "event_id": f"{tag}-{i}",
            "type": kinds[i % 3],
            "user_id": f"u{int(u)}",
            "video_id": f"v{int(v)}",
            "ts": ts,
            **({"watch_ms": 9000} if i % 3 == 2 else {}),
        }
        for i, (u, v) in enumerate(zip(users.tolist(), videos.tolist(), strict=True))
    ]


def _engage(eng: Engine, rng: np.random.Generator, args: Any, ts: float, tag: str) -> None:
    """`--active-share` of the users engage once more."""
    active = rng.choice(args.users, int(args.users * args.active_share), False)
    for start in range(0, len(active), BATCH):
        chunk = active[start : start + BATCH]
        picks = rng.integers(0, args.videos, len(chunk))
        eng.ingest(_events(chunk, picks, ts, f"{tag}-{start}"))


def _timed_snapshot(eng: Engine, prober: Prober) -> float:
    """Seconds one snapshot takes; the prober's `worst()` is the longest lock wait in it."""
    time.sleep(0.05)
    prober.reset()
    started = time.perf_counter()
    eng.snapshot()
    seconds = time.perf_counter() - started
    time.sleep(0.01)
    return seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--videos", type=int, default=5_000)
    p.add_argument("--events-per-user", type=int, default=6)
    p.add_argument("--active-share", type=float, default=0.02, help="users active per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "bench_snapshot.json"))
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    rng = np.random.default_rng(args.seed)
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="reelrank-bench-snapshot-") as tmp:
        settings = load_settings(
            env={},
            data_dir=tmp,
            trainer="off",
            content_embedder="hashed",
            snapshot_interval_s=1e9,  # only the snapshots taken here
        )
        eng = Engine(settings).open()
        try:
            now = time.time()
            for start in range(0, args.videos, BATCH):
                eng.upsert_videos(
                    [
                        {"id": f"v{i}", "creator_id": f"c{i % 500}", "hashtags": [f"t{i % 40}"],
                         "caption": f"clip {i}", "duration_ms": 15_000, "created_at": now}
                        for i in range(start, min(start + BATCH, args.videos))
                    ]
                )  # fmt: skip
            users = np.repeat(np.arange(args.users), args.events_per_user)
            videos = rng.integers(0, args.videos, len(users))
            built = time.perf_counter()
            for start in range(0, len(users), BATCH):
                s = slice(start, start + BATCH)
                eng.ingest(_events(users[s], videos[s], now, f"h{start}"))
            build_s = time.perf_counter() - built
            prober = Prober(eng.state.lock)
            prober.start()
            for k in range(args.rounds + 1):
                if k:
                    _engage(eng, rng, args, now + k, f"r{k}")
                seconds = _timed_snapshot(eng, prober)
                row = {
                    "round": k,
                    "users_active_since_last": None
                    if k == 0
                    else int(args.users * args.active_share),
                    "snapshot_s": round(seconds, 4),
                    "longest_lock_wait_ms": round(1000 * prober.worst(), 2),
                }
                rounds.append(row)
                print(
                    f"snapshot {k}: {seconds:.3f} s; longest wait for the writer lock "
                    f"{row['longest_lock_wait_ms']:.1f} ms"
                )
            prober.stop.set()
            # A restart: the first snapshot after it, with a round of activity before it.
            eng.close()
            started = time.perf_counter()
            eng = Engine(settings).open()
            open_s = time.perf_counter() - started
            _engage(eng, rng, args, now + args.rounds + 1, "after")
            prober = Prober(eng.state.lock)
            prober.start()
            seconds = _timed_snapshot(eng, prober)
            prober.stop.set()
            after_restart = {
                "open_s": round(open_s, 3),
                "snapshot_s": round(seconds, 4),
                "longest_lock_wait_ms": round(1000 * prober.worst(), 2),
            }
            print(
                f"after a restart (open {open_s:.2f} s): snapshot {seconds:.3f} s; longest "
                f"wait for the writer lock {after_restart['longest_lock_wait_ms']:.1f} ms"
            )
        finally:
            eng.close()
    later = rounds[1:]
    out = {
        "benchmark": "bench_snapshot",
        "git": git_state(),
        "machine": {"python": platform.python_version(), "cores": os.cpu_count()},
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "params": vars(args),
        "build_s": round(build_s, 1),
        "rounds": rounds,
        "first": rounds[0],
        "after_restart": after_restart,
        "median_after_first": {
            "snapshot_s": round(statistics.median(r["snapshot_s"] for r in later), 4),
            "longest_lock_wait_ms": round(
                statistics.median(r["longest_lock_wait_ms"] for r in later), 2
            ),
        }
        if later
        else None,
    }
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.output}")
    return out


if __name__ == "__main__":
    main()
