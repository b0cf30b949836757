"""The whole benchmark suite in one command: every speed figure, a summary and plots.

Runs the benchmark scripts one after another as subprocesses (their output is shown and
kept in `<results>/logs/`), each writing its JSON to the results directory:

- http: bench_http.py at 100,000 videos, ingest events/s and feed latency and requests/s;
- scale-100k, scale-1m: bench_scale.py at 100,000 and at 1,000,000 videos (load,
  warm-up, unloaded and open-loop loaded feed, memory, restart);
- ann: bench_ann.py, the vector index against exact search (recall, latency, upserts, memory);
- learning: bench_learning.py, training throughput, ranking 1,000 candidates learned vs
  heuristic, freshness (event -> serving model), feed with the trainer busy vs stopped,
  shared bottom vs MMoE with learning curves;
- lifecycle: sim_lifecycle.py, traffic pools and cold start (in process).

Then it writes `<results>/SUMMARY.md` (a table per area with medians and ratios, the
command and time of every part, the machine, its load and the git commit) and PNG plots
in `<results>/plots/`. `suite.json` in the results directory records each part's command,
status, duration and machine load, so the summary can be rebuilt later.

    python benchmarks/suite.py                 # the full suite (about 1.5-2 hours on 2 cores)
    python benchmarks/suite.py --quick         # small sizes, a smoke run of a few minutes
    python benchmarks/suite.py --only http     # one part (repeatable or a comma list)
    python benchmarks/suite.py --summary-only  # SUMMARY.md and plots from the JSON there

`--quick` writes to `benchmarks/results/quick/` unless `--results` says otherwise, so a
smoke run never replaces the figures of a full one. A part that fails or runs past its
time limit (SIGINT, then SIGKILL of its process group) is reported as such; bench_scale
saves after every phase, so the phases it finished are still summarised.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
HASHED = "--server-env REELRANK_CONTENT_EMBEDDER=hashed"


@dataclass(frozen=True)
class Part:
    """One benchmark script run with fixed arguments; its JSON goes to `output`."""

    name: str
    script: str
    output: str
    full: str  # the script's arguments in the full run
    quick: str  # ... and in the quick one
    limit_min: float  # time limit of the full run, in minutes (quick: a quarter, >= 10)

    def argv(self, quick: bool, results: Path, extra: str = "") -> list[str]:
        """The command; `extra` arguments come last, so they override the part's own."""
        args = shlex.split(self.quick if quick else self.full) + shlex.split(extra)
        if self.name == "ann" and not quick and find_spec("hnswlib") is not None:
            args[args.index("--libs") + 1] += ",hnswlib"
        out = ["--output", str(results / self.output)]
        return [sys.executable, f"benchmarks/{self.script}", *args, *out]

    def limit_s(self, quick: bool) -> float:
        return 60 * (max(10.0, self.limit_min / 4) if quick else self.limit_min)


# Quick sizes: each part in a minute or few. Its learning part leaves out `feed` (trainer
# busy vs stopped), which needs a log long enough to keep a trainer busy for seconds: a
# few minutes of filling. Full: the sizes the README quotes; both scale runs use the hashed
# content embedder (MiniLM embeds about 200 captions/s on one core, which would be most of
# the load time at a million videos).
_SCALE_QUICK = (
    "--unloaded-requests 300 --rounds 1 --rps 40 --duration 10 --drain 5 --event-rate 300 "
    f"--warmup-timeout 120 {HASHED}"
)
PARTS = (
    Part("http", "bench_http.py", "bench_http.json", "--videos 100000 --users 100000",
         "--videos 3000 --users 2000 --ingest-batches 20 --feed-requests 300 --rounds 1", 45),
    Part("scale-100k", "bench_scale.py", "bench_scale_100k.json",
         f"--videos 100000 --users 100000 --engaged-users 20000 {HASHED}",
         f"--videos 5000 --users 5000 --engaged-users 1000 {_SCALE_QUICK}", 45),
    Part("scale-1m", "bench_scale.py", "bench_scale_1m.json", HASHED,
         f"--videos 20000 --users 20000 --engaged-users 3000 {_SCALE_QUICK}", 120),
    Part("ann", "bench_ann.py", "bench_ann.json",
         "--n 1000000 --libs ivf,faiss-hnsw --nprobe 16,32,64,96,128",
         "--n 50000 --queries 200 --upserts 2000 --writes 500 --libs ivf,faiss-hnsw "
         "--nprobe 16,64,128", 40),
    Part("learning", "bench_learning.py", "bench_learning.json", "",
         "--only train,rank,fresh,arch --rounds 1 --videos 2000 --viewers 100 "
         "--fill-rounds 5 --rank-requests 100 --rank-warmup 10 --fresh-videos 1000 "
         "--fresh-viewers 100 --fresh-min-examples 300 --fresh-trials 2 "
         "--dense-sync-interval-s 5 --arch-train-rounds 4 --arch-heldout-rounds 1", 40),
    Part("lifecycle", "sim_lifecycle.py", "sim_lifecycle.json", "",
         "--videos 1000 --viewers 100 --new 20 --rounds 10 --newcomers 6", 20),
)  # fmt: skip
BY_NAME = {p.name: p for p in PARTS}


# -- facts about the run --------------------------------------------------------------------
def _git(*argv: str) -> str:
    try:
        return subprocess.run(
            ["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _uptime() -> str:
    """`uptime` as printed (the load averages are what matter on a shared machine)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    mem = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024**2, 1)
    return {
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": _version("torch"),
        "faiss": _version("faiss-cpu"),
        "hnswlib": _version("hnswlib"),
    }


def git_state() -> dict[str, Any]:
    return {
        "commit": _git("rev-parse", "--short", "HEAD"),
        "uncommitted_files": len(_git("status", "--porcelain").splitlines()),
    }


def display(argv: list[str]) -> str:
    """A command as a reader would type it from the repository root."""
    words = ["python" if argv[0] == sys.executable else argv[0]]
    for w in argv[1:]:
        with contextlib.suppress(ValueError):
            w = str(Path(w).relative_to(ROOT))
        words.append(w)
    return shlex.join(words)


# -- running a part -------------------------------------------------------------------------
def run_part(
    part: Part, quick: bool, results: Path, limit_min: float | None, extra: str
) -> dict[str, Any]:
    """Run one script, its output shown and kept in logs/NAME.log; stop it at its limit."""
    argv = part.argv(quick, results, extra)
    log_path = results / "logs" / f"{part.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    limit = 60 * limit_min if limit_min else part.limit_s(quick)
    record: dict[str, Any] = {
        "command": display(argv),
        "output": part.output,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "uptime_before": _uptime(),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "limit_s": limit,
    }
    print(f"\n== {part.name}: {record['command']}", flush=True)
    t0 = time.monotonic()
    stopped: list[str] = []  # why the suite stopped the script, if it did
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

        def stop(why: str) -> None:
            """SIGINT first (the scripts clean up their servers and save), then SIGKILL."""
            stopped.append(why)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=180)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

        timer = threading.Timer(limit, stop, (f"stopped at its time limit ({limit / 60:g} min)",))
        timer.daemon = True
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                log.write(line)
            code = proc.wait()
        except KeyboardInterrupt:
            stop("interrupted")
            code = proc.wait()
            record["interrupted"] = True
        finally:
            timer.cancel()
    record["seconds"] = round(time.monotonic() - t0, 1)
    record["uptime_after"] = _uptime()
    record["exit_code"] = code
    if stopped:
        record["status"] = stopped[0]
    else:
        record["status"] = "ok" if code == 0 else f"failed (exit code {code})"
    print(f"== {part.name}: {record['status']} in {record['seconds']} s", flush=True)
    return record


def load_manifest(results: Path) -> dict[str, Any]:
    path = results / "suite.json"
    if path.exists():
        with contextlib.suppress(ValueError):
            data: dict[str, Any] = json.loads(path.read_text())
            return data
    return {}


# -- reading the results --------------------------------------------------------------------
def _get(d: Any, *keys: Any) -> Any:
    """d[k1][k2]...; None where any step is missing."""
    for k in keys:
        found = (isinstance(d, dict) and k in d) or (
            isinstance(d, list) and isinstance(k, int) and -len(d) <= k < len(d)
        )
        if not found:
            return None
        d = d[k]
    return d


def _median(xs: Any) -> float | None:
    vals = [x for x in xs or [] if isinstance(x, int | float) and not isinstance(x, bool)]
    return statistics.median(vals) if vals else None


def _rounds_median(rounds: Any, *keys: Any) -> float | None:
    """The median over rounds of one figure (computed here, not read from the script)."""
    return _median([_get(r, *keys) for r in rounds or []])


def _ratio(a: Any, b: Any) -> str:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return f"{a / b:.2f}x"
    return ""


def fmt(x: Any, digits: int | None = None) -> str:
    """Numbers as a reader wants them: separators for big ones, a few digits for small."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if not isinstance(x, int | float):
        return str(x)
    if digits is not None:
        return f"{x:,.{digits}f}"
    if abs(x) >= 100 or float(x).is_integer():
        return f"{x:,.0f}"
    return f"{x:.2f}" if abs(x) >= 1 else f"{x:.3g}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in r) + " |" for r in rows
    ]
    return [*lines, ""]


def _load_avg(uptime: str | None) -> str:
    m = re.search(r"load average[s]?:\s*(.*)$", uptime or "")
    return m.group(1) if m else "-"


def _read(results: Path, name: str) -> dict[str, Any] | None:
    path = results / name
    if not path.exists():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except ValueError:
        return None
    return data


class Report:
    """SUMMARY.md built section by section; notes collect what is missing or partial."""

    def __init__(self, results: Path) -> None:
        self.results = results
        self.manifest = load_manifest(results)
        self.data = {p.name: _read(results, p.output) for p in PARTS}
        self.lines: list[str] = []
        self.notes: list[str] = []

    def part_header(self, name: str, title: str, level: str = "##") -> dict[str, Any] | None:
        """The section title, the command and how the run went; the part's JSON."""
        part = BY_NAME[name]
        rec = _get(self.manifest, "parts", name) or {}
        self.lines += [f"{level} {title}", ""]
        planned = display(part.argv(self.manifest.get("mode") == "quick", self.results))
        if rec.get("command"):
            self.lines += [f"Command: `{rec['command']}`", ""]
            if rec["command"] != planned:
                self.notes.append(
                    f"`{name}`: run with other arguments than the suite's own "
                    f"(`{planned}`): see its command."
                )
        else:
            self.lines += [f"Command (no record of the run; as planned): `{planned}`", ""]
        if rec:
            self.lines += [
                f"Ran {rec.get('started') or '-'}, {fmt(rec.get('seconds'))} s, "
                f"{rec.get('status')}; "
                f"load average before {_load_avg(rec.get('uptime_before'))}, after "
                f"{_load_avg(rec.get('uptime_after'))}.",
                "",
            ]
            if rec.get("status") != "ok":
                self.notes.append(
                    f"`{name}`: {rec.get('status')} after {rec.get('seconds')} s"
                    " (figures below are what it saved)."
                )
        d = self.data[name]
        if d is None:
            self.lines += [f"No results: `{part.output}` is missing.", ""]
            self.notes.append(f"`{name}`: no `{part.output}`, so none of its figures.")
        elif d.get("error"):
            self.notes.append(f"`{name}`: the script reported `{d['error'][:300]}`.")
        return d

    # -- areas ----------------------------------------------------------------------------
    def http(self) -> None:
        d = self.part_header("http", "Feed and ingest over HTTP (bench_http)")
        if d is None:
            return
        r = d.get("rounds") or {}
        p = d.get("params") or {}

        def med(phase: str, key: str) -> float | None:
            return _rounds_median(r.get(phase), key)

        floor50, floor99 = med("http_floor", "p50_ms"), med("http_floor", "p99_ms")
        un50, un99, unmean = (med("feed_unloaded", k) for k in ("p50_ms", "p99_ms", "mean_ms"))
        one_client = 1000 / unmean if unmean else None
        rps = med("feed_concurrent", "requests_per_s")
        self.lines += [
            f"{fmt(_get(d, 'load', 'videos'))} videos, {fmt(_get(d, 'load', 'users'))} users, "
            f"SQLite synchronous=FULL; medians of {len(r.get('feed_unloaded') or [])} rounds; "
            f"pages of {p.get('n')}; the server runs with its defaults (content embedder "
            "`auto`).",
            "",
        ]
        rows = [
            [
                f"ingest events/s (batches of {p.get('batch')}, {p.get('ingest_clients')} clients)",
                med("ingest", "events_per_s"),
                "",
                "",
            ],
            [
                "ingest batch p50 / p99 ms",
                f"{fmt(med('ingest', 'batch_p50_ms'))} / {fmt(med('ingest', 'batch_p99_ms'))}",
                "",
                "",
            ],
            ["feed p50 ms, one client", un50, f"/healthz {fmt(floor50)}", _ratio(un50, floor50)],
            ["feed p99 ms, one client", un99, f"/healthz {fmt(floor99)}", _ratio(un99, floor99)],
            [
                f"feed requests/s, {p.get('feed_clients')} client processes",
                rps,
                f"one client {fmt(one_client)}",
                _ratio(rps, one_client),
            ],
            [
                f"feed p50 / p99 ms, {p.get('feed_clients')} clients",
                f"{fmt(med('feed_concurrent', 'p50_ms'))} / "
                f"{fmt(med('feed_concurrent', 'p99_ms'))}",
                f"one client {fmt(un50)} / {fmt(un99)}",
                _ratio(med("feed_concurrent", "p99_ms"), un99),
            ],
        ]
        self.lines += _table(["figure", "median", "baseline, same run", "ratio"], rows)

    def scale(self) -> None:
        names = ["scale-100k", "scale-1m"]
        ds = {}
        self.lines += ["## Full path at catalog scale (bench_scale)", ""]
        for n in names:
            d = self.part_header(n, f"`{n}`", level="###")
            if d is not None:
                ds[n] = d
                self.scale_notes(n, d)
        if not ds:
            return
        cols = [n for n in names if n in ds]
        head = ["figure"] + [f"{fmt(_get(ds[n], 'params', 'videos'))} videos" for n in cols]
        if len(cols) == 2:
            head.append("ratio")

        def ph(d: dict[str, Any], *k: Any) -> Any:
            return _get(d, "phases", *k)

        def mem(d: dict[str, Any], who: str) -> float | None:
            vals = [_get(m, who, "VmHWM_mib") for m in (d.get("memory") or {}).values()]
            vals = [v for v in vals if isinstance(v, int | float)]
            return max(vals) if vals else None

        figures: list[tuple[str, Any]] = [
            ("load: videos/s", lambda d: ph(d, "load", "videos", "per_s")),
            ("load: users/s", lambda d: ph(d, "load", "users", "per_s")),
            ("load: history events/s", lambda d: ph(d, "load", "events", "per_s")),
            ("warm-up: learned ranker and retrieval ready", lambda d: ph(d, "warmup", "ready")),
            ("warm-up: seconds", lambda d: ph(d, "warmup", "seconds")),
            (
                "feed unloaded p50 ms (median of rounds)",
                lambda d: _rounds_median(ph(d, "unloaded", "rounds"), "p50_ms"),
            ),
            (
                "feed unloaded p99 ms (median of rounds)",
                lambda d: _rounds_median(ph(d, "unloaded", "rounds"), "p99_ms"),
            ),
            (
                "feed unloaded p999 ms (median of rounds)",
                lambda d: _rounds_median(ph(d, "unloaded", "rounds"), "p999_ms"),
            ),
            (
                "server pipeline mean ms (unloaded)",
                lambda d: _rounds_median(ph(d, "unloaded", "rounds"), "server_pipeline_mean_ms"),
            ),
            (
                "HTTP floor /healthz p50 ms",
                lambda d: _rounds_median(ph(d, "unloaded", "rounds"), "healthz_p50_ms"),
            ),
            (
                "recall candidates per request",
                lambda d: _rounds_median(ph(d, "unloaded", "rounds"), "candidates_per_request"),
            ),
            (
                "recall channels over their time budget, per request",
                lambda d: _rounds_median(
                    ph(d, "unloaded", "rounds"), "recall_timeouts_per_request"
                ),
            ),
            ("loaded: target requests/s (open loop)", lambda d: ph(d, "loaded", "target_rps")),
            ("loaded: achieved requests/s", lambda d: ph(d, "loaded", "achieved_rps")),
            ("loaded: p50 ms (from the scheduled send)", lambda d: ph(d, "loaded", "p50_ms")),
            ("loaded: p99 ms", lambda d: ph(d, "loaded", "p99_ms")),
            ("loaded: requests never sent (server behind)", lambda d: ph(d, "loaded", "unsent")),
            (
                "loaded: events/s streamed to the trainer",
                lambda d: ph(d, "loaded", "events", "events_per_s"),
            ),
            (
                "loaded: trainer examples/s (median)",
                lambda d: ph(d, "loaded", "trainer", "examples_per_s_median"),
            ),
            (
                "loaded: trainer lag s, event -> trained (median)",
                lambda d: ph(d, "loaded", "trainer", "lag_s_median"),
            ),
            ("memory: server peak RSS MiB", lambda d: mem(d, "server")),
            ("memory: trainer peak RSS MiB", lambda d: mem(d, "trainer")),
            ("restart: SIGTERM -> exit s", lambda d: ph(d, "restart", "stop_s")),
            ("restart: start -> first feed s", lambda d: ph(d, "restart", "first_feed_s")),
            ("restart: start -> learned ranker s", lambda d: ph(d, "restart", "learned_serving_s")),
        ]
        rows = []
        for label, get in figures:
            vals = [get(ds[n]) for n in cols]
            row: list[Any] = [label, *vals]
            if len(cols) == 2:
                row.append("" if isinstance(vals[0], bool) else _ratio(vals[1], vals[0]))
            rows.append(row)
        if len(cols) == 2:
            self.lines += ["Side by side (ratio: the larger catalog over the smaller):", ""]
        self.lines += _table(head, rows)

    def scale_notes(self, name: str, d: dict[str, Any]) -> None:
        want = ("load", "warmup", "unloaded", "loaded", "restart")
        missing = [k for k in want if k not in (d.get("phases") or {})]
        p, env = d.get("params") or {}, d.get("server_env") or {}
        self.lines += [
            f"{fmt(p.get('videos'))} videos, {fmt(p.get('users'))} users "
            f"({fmt(p.get('engaged_users'))} with {p.get('events_per_user')} events each), "
            f"server settings {', '.join(f'{k}={v}' for k, v in env.items())}; "
            f"loaded phase {p.get('rps')} requests/s "
            f"for {p.get('duration')} s with {p.get('event_rate')} events/s.",
            "",
        ]
        if missing:
            self.notes.append(f"`{name}`: phases not measured: {', '.join(missing)}.")
        if _get(d, "phases", "warmup", "ready") is False:
            self.notes.append(
                f"`{name}`: warm-up ended before the learned ranker and the "
                "retrieval index were ready (its feed figures mix rankers)."
            )
        lo = _get(d, "phases", "loaded") or {}
        if lo.get("unsent"):
            self.notes.append(
                f"`{name}`: at {fmt(lo.get('target_rps'))} requests/s open loop the server fell "
                f"behind ({fmt(lo.get('achieved_rps'))}/s achieved, {fmt(lo['unsent'])} requests "
                "never sent): its loaded latencies measure the queue, not the service time."
            )
        if _get(lo, "trainer", "examples_per_s_median") == 0:
            self.notes.append(
                f"`{name}`: the trainer made no progress during the loaded phase (median "
                f"examples/s 0, lag {fmt(_get(lo, 'trainer', 'lag_s_median'))} s)."
            )
        changed = _get(d, "git", "src_changes")
        if changed:
            self.notes.append(
                f"`{name}`: {len(changed)} files in src/ differed from commit "
                f"`{_get(d, 'git', 'commit')}` when it started (work in progress in the tree)."
            )

    def learning(self) -> None:
        d = self.part_header("learning", "Learning path (bench_learning)")
        if d is None:
            return
        if _get(d, "code", "src_changed_during_run"):
            self.notes.append(
                "`learning`: the package source changed during the run; figures may mix versions."
            )
        chosen = str(_get(d, "params", "only") or "train,rank,fresh,feed,arch").split(",")
        for phase in ("train", "rank", "fresh", "feed", "arch"):
            if phase not in d:
                why = "measured" if phase in chosen else "chosen (`--only`)"
                self.notes.append(f"`learning`: phase `{phase}` not {why}, so none of its figures.")
        rows: list[list[Any]] = []
        tr = _get(d, "train", "rounds")
        if tr:
            ev = _rounds_median(tr, "events_per_s")
            rows += [
                ["training: log events/s, one core (goal >= 10,000)", ev, "", ""],
                ["training: examples/s", _rounds_median(tr, "examples_per_s"), "", ""],
            ]
        for name, label in (
            ("threads_1", "1 torch thread"),
            ("threads_default", "default threads"),
        ):
            rr = _get(d, "rank", "rounds", name)
            if not rr:
                continue
            for q in ("p50_ms", "p99_ms"):
                lv = _rounds_median(rr, "learned", q)
                hv = _rounds_median(rr, "heuristic", q)
                rows.append(
                    [
                        f"rank 1,000 candidates, learned {q[:3]} ms ({label})",
                        lv,
                        f"heuristic {fmt(hv)}",
                        _ratio(lv, hv),
                    ]
                )
        trials = _get(d, "fresh", "trials")
        if trials:
            for key, goal in (("sparse_serving_s", 5), ("dense_serving_s", 60)):
                vals = [t.get(key) for t in trials]
                got = [v for v in vals if v is not None]
                rows.append(
                    [
                        f"freshness: {key.replace('_', ' ')} (goal <= {goal} s)",
                        _median(got),
                        f"max {fmt(max(got) if got else None)}, {len(got)} of {len(vals)} trials",
                        "",
                    ]
                )
        fr = _get(d, "feed", "rounds")
        if fr:
            for q in ("p50_ms", "p99_ms"):
                b = _rounds_median(fr.get("trainer_busy"), q)
                o = _rounds_median(fr.get("trainer_off"), q)
                rows.append(
                    [f"feed {q[:3]} ms, trainer busy", b, f"trainer off {fmt(o)}", _ratio(b, o)]
                )
                if fr.get("trainer_off_cpu_hog"):
                    h = _rounds_median(fr["trainer_off_cpu_hog"], q)
                    rows.append(
                        [
                            f"feed {q[:3]} ms, trainer off + 1-core busy loop",
                            h,
                            f"trainer off {fmt(o)}",
                            _ratio(h, o),
                        ]
                    )
        ar = _get(d, "arch", "rounds")
        if ar:
            for head in ("like", "finish"):
                sb = _rounds_median(ar, f"shared_bottom_auc_{head}")
                mm = _rounds_median(ar, f"mmoe_auc_{head}")
                hv = _rounds_median(ar, f"heuristic_auc_{head}")
                rows.append(
                    [
                        f"held-out AUC {head}: shared bottom (default)",
                        fmt(sb, 3),
                        f"MMoE {fmt(mm, 3)}, heuristic {fmt(hv, 3)}",
                        f"{sb - hv:+.3f} vs heuristic" if sb and hv else "",
                    ]
                )
            sb = _rounds_median(ar, "shared_bottom_model_examples_per_s")
            mm = _rounds_median(ar, "mmoe_model_examples_per_s")
            rows.append(
                [
                    "model-only training examples/s: shared bottom",
                    sb,
                    f"MMoE {fmt(mm)}",
                    _ratio(sb, mm),
                ]
            )
        n = len(tr or []) or len(ar or [])
        self.lines += [f"Medians of {n} rounds; freshness over {len(trials or [])} trials.", ""]
        self.lines += _table(["figure", "median", "baseline, same run", "ratio"], rows)

    def ann(self) -> None:
        d = self.part_header("ann", "Vector index (bench_ann)")
        if d is None:
            return
        p = d.get("params") or {}
        exact = d.get("exact_numpy_query_ms")
        self.lines += [
            f"{fmt(p.get('n'))} clustered {p.get('dim')}-dimensional unit vectors, "
            f"{p.get('queries')} queries one at a time on one thread; exact numpy search "
            f"{fmt(exact)} ms per query (batched by 64) is the baseline.",
            "",
        ]
        rows = []
        for name, r in (d.get("libraries") or {}).items():
            ups = fmt(r.get("upserts_per_s"))
            if "upserts_per_s_batch1" in r:
                ups += f" / {fmt(r['upserts_per_s_batch1'])}"
            rows.append(
                [
                    name,
                    r.get("build_s"),
                    fmt(r.get("recall_at_k"), 3),
                    r.get("query_p50_ms"),
                    r.get("query_p99_ms"),
                    _ratio(exact, r.get("query_p50_ms")),
                    ups,
                    fmt(r.get("removal_supported")),
                    r.get("index_rss_mb"),
                ]
            )
        self.lines += _table(
            [
                "index",
                "build s",
                f"recall@{p.get('k')}",
                "p50 ms",
                "p99 ms",
                "speed-up over exact (p50)",
                "upserts/s (100 / 1 per call)",
                "removal",
                "index RSS MB",
            ],
            rows,
        )
        if not _version("hnswlib"):
            self.notes.append(
                "`ann`: hnswlib is not installed (`pip install -e '.[ann]'`), "
                "so it is not compared."
            )

    def lifecycle(self) -> None:
        d = self.part_header("lifecycle", "Content lifecycle simulation (sim_lifecycle)")
        if d is None:
            return
        pools, cold = d.get("pools") or {}, d.get("cold_start") or {}
        rows = [
            ["new videos planted good / bad", f"{fmt(pools.get('new_videos'))} (half each)", ""],
            [
                "reached the top pool: good / bad",
                f"{fmt(pools.get('good_reached_top'))} / {fmt(pools.get('bad_reached_top'))}",
                "",
            ],
            [
                "promotion precision / recall",
                f"{fmt(pools.get('precision'))} / {fmt(pools.get('recall'))}",
                "",
            ],
            ["unsettled after the rounds", pools.get("unsettled"), ""],
            [
                "cold start: loved topic's share of page 1",
                cold.get("first_page_share"),
                f"catalog share {fmt(cold.get('topic_catalog_share'))}",
            ],
            [
                f"cold start: share after {cold.get('engagements')} engagements",
                cold.get("share_after"),
                _ratio(cold.get("share_after"), cold.get("topic_catalog_share"))
                + " the catalog share"
                if cold.get("topic_catalog_share")
                else "",
            ],
            ["cold start: pages to engage", cold.get("pages_to_engage"), ""],
            [
                "simulation seconds (pools + cold start)",
                f"{fmt(pools.get('seconds'))} + {fmt(cold.get('seconds'))}",
                "",
            ],
        ]
        self.lines += _table(["figure", "value", "baseline"], rows)

    def headlines(self) -> list[str]:
        """The few figures a reader looks for first, each with where it comes from."""
        d = self.data
        rows: list[list[Any]] = []
        http = d["http"]
        if http:
            r = http.get("rounds") or {}
            v = _get(http, "load", "videos")
            rows.append(
                [
                    f"feed p50 / p99 ms at {fmt(v)} videos (HTTP, one client)",
                    f"{fmt(_rounds_median(r.get('feed_unloaded'), 'p50_ms'))} / "
                    f"{fmt(_rounds_median(r.get('feed_unloaded'), 'p99_ms'))}",
                    "http",
                ]
            )
            rows.append(
                [
                    "feed requests/s, concurrent clients",
                    _rounds_median(r.get("feed_concurrent"), "requests_per_s"),
                    "http",
                ]
            )
            rows.append(
                [
                    "ingest events/s (durable batches)",
                    _rounds_median(r.get("ingest"), "events_per_s"),
                    "http",
                ]
            )
        for n in ("scale-100k", "scale-1m"):
            s = d[n]
            un = _get(s, "phases", "unloaded", "rounds")
            if un:
                rows.append(
                    [
                        f"feed p50 / p99 ms at {fmt(_get(s, 'params', 'videos'))} videos "
                        "(full path, unloaded)",
                        f"{fmt(_rounds_median(un, 'p50_ms'))} / "
                        f"{fmt(_rounds_median(un, 'p99_ms'))}",
                        n,
                    ]
                )
            lo = _get(s, "phases", "loaded")
            if lo:
                rows.append(
                    [
                        f"feed achieved requests/s at {fmt(_get(s, 'params', 'videos'))} "
                        f"videos (open loop at {fmt(lo.get('target_rps'))})",
                        lo.get("achieved_rps"),
                        n,
                    ]
                )
        lr = d["learning"]
        if _get(lr, "train", "rounds"):
            rows.append(
                [
                    "training log events/s, one core",
                    _rounds_median(lr["train"]["rounds"], "events_per_s"),
                    "learning",
                ]
            )
        trials = _get(lr, "fresh", "trials") or []
        if trials:
            sp = _median([t.get("sparse_serving_s") for t in trials])
            de = _median([t.get("dense_serving_s") for t in trials])
            rows.append(
                [
                    "freshness s, event -> serving: embedding row / dense weights",
                    f"{fmt(sp)} / {fmt(de)}",
                    "learning",
                ]
            )
        ann = d["ann"]
        libs = _get(ann, "libraries") or {}
        ivf = [k for k in libs if k.startswith("ivf-")]
        if ivf:
            r = libs[ivf[-1]]
            rows.append(
                [
                    f"ANN {ivf[-1]} at {fmt(_get(ann, 'params', 'n'))} vectors: recall / p99 ms",
                    f"{fmt(r.get('recall_at_k'), 3)} / {fmt(r.get('query_p99_ms'))}",
                    "ann",
                ]
            )
        for n in ("scale-1m", "scale-100k"):
            s = d[n]
            hwm = [_get(m, "server", "VmHWM_mib") for m in (_get(s, "memory") or {}).values()]
            hwm = [x for x in hwm if x]
            if hwm:
                rows.append(
                    [
                        f"server peak RSS MiB at {fmt(_get(s, 'params', 'videos'))} videos",
                        max(hwm),
                        n,
                    ]
                )
                break
        return _table(["figure", "median", "part"], rows) if rows else []

    def run_facts(self) -> list[str]:
        m = self.manifest
        mc, g = m.get("machine") or {}, m.get("git") or {}
        recs = [(p, _get(m, "parts", p.name)) for p in PARTS]
        recs = [(p, rec) for p, rec in recs if rec]
        total = sum(rec.get("seconds") or 0 for _, rec in recs)
        out = [
            f"Mode: **{m.get('mode', 'unknown')}**; last run finished {m.get('finished') or '-'}; "
            f"the parts below took {fmt(total)} s in all (started as listed: `--only` runs "
            "add to the same summary).",
            "",
            f"Machine: {fmt(mc.get('cores'))} cores, {fmt(mc.get('memory_gib'))} GiB, Python "
            f"{fmt(mc.get('python'))}, {fmt(mc.get('platform'))}; torch {fmt(mc.get('torch'))}, "
            f"faiss {fmt(mc.get('faiss'))}, hnswlib {mc.get('hnswlib') or 'not installed'}.",
            "",
            f"Code at the last run: git commit `{g.get('commit') or '-'}`"
            + (
                f" with {g['uncommitted_files']} uncommitted files in the work tree"
                if g.get("uncommitted_files")
                else ""
            )
            + ".",
            "",
            "The machine is shared: the load averages (1, 5, 15 minutes) before and after each "
            "part show how much other work competed with it.",
            "",
        ]
        rows = []
        for p, rec in recs:
            d = self.data[p.name] or {}
            commit = rec.get("commit") or _get(d, "git", "commit") or _get(d, "code", "git_head")
            rows.append(
                [
                    p.name,
                    rec.get("started") or "-",
                    rec.get("status"),
                    rec.get("seconds"),
                    _load_avg(rec.get("uptime_before")),
                    _load_avg(rec.get("uptime_after")),
                    f"`{commit}`" if commit else "-",
                ]
            )
        if rows:
            head = ["part", "started (UTC)", "status", "seconds", "load before", "load after"]
            out += _table([*head, "commit"], rows)
        else:
            out += ["No record of the runs (`suite.json` missing): figures from the JSON only.", ""]
        return out

    def build(self) -> str:
        self.http()
        self.scale()
        self.learning()
        self.ann()
        self.lifecycle()
        body = self.lines
        head = [
            "# Benchmark summary",
            "",
            "Written by `benchmarks/suite.py` from the JSON in this directory; plots in "
            "`plots/`. Every ratio compares two figures measured in the same run.",
            "",
        ]
        head += self.run_facts()
        head += ["## Headlines", "", *self.headlines()]
        tail = ["## Missing or partial", ""]
        tail += [f"- {n}" for n in self.notes] or ["Nothing: every part ran and saved."]
        return "\n".join([*head, *body, *tail]) + "\n"


# -- plots --------------------------------------------------------------------------------------
def _cdf_line(ax: Any, cdf: Any, label: str, **kw: Any) -> bool:
    ms, q = _get(cdf, "ms"), _get(cdf, "q")
    if not ms or not q:
        return False
    ax.plot([max(x, 1e-3) for x in ms], [v / 100 for v in q], label=label, **kw)
    return True


def _finish(ax: Any, title: str, xlabel: str, ylabel: str, logx: bool = False) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(
            0.5,
            0.5,
            "no data in this run",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="grey",
        )


def _bars(ax: Any, items: list[tuple[str, Any]], title: str, unit: str) -> None:
    items = [(k, v) for k, v in items if isinstance(v, int | float) and v > 0]
    if not items:
        _finish(ax, title, unit, "")
        return
    labels, vals = zip(*items, strict=True)
    y = range(len(vals))
    ax.barh(list(y), list(vals), color="tab:blue")
    ax.set_yticks(list(y), list(labels), fontsize=7)
    ax.invert_yaxis()
    for i, v in enumerate(vals):
        ax.text(v, i, f" {fmt(v)}", va="center", fontsize=7)
    ax.set_xlim(0, max(vals) * 1.3)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(unit)
    ax.grid(True, axis="x", alpha=0.3)


def plot_latency(r: Report, plt: Any, path: Path) -> None:
    d = r.data
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    a, b, c, e = axes.flat
    http = d["http"] or {}
    _cdf_line(a, _get(http, "latency_cdf", "feed_unloaded"), "http: feed, one client")
    _cdf_line(a, _get(http, "latency_cdf", "http_floor"), "http: /healthz floor", ls=":")
    _cdf_line(b, _get(http, "latency_cdf", "feed_concurrent"), "http: feed, concurrent clients")
    for n in ("scale-100k", "scale-1m"):
        s = d[n] or {}
        v = fmt(_get(s, "params", "videos"))
        _cdf_line(a, _get(s, "phases", "unloaded", "cdf"), f"{n}: unloaded, {v} videos")
        _cdf_line(
            b,
            _get(s, "phases", "loaded", "cdf"),
            f"{n}: open loop {fmt(_get(s, 'phases', 'loaded', 'target_rps'))}/s",
        )
    lr = d["learning"] or {}
    for name, label in (
        ("trainer_busy", "trainer busy"),
        ("trainer_off", "trainer off"),
        ("trainer_off_cpu_hog", "trainer off + busy loop"),
    ):
        _cdf_line(b, _get(lr, "feed", "cdf", name), f"learning: feed, {label}", ls="--")
    for path_name in ("learned", "heuristic", "cascade_rank"):
        _cdf_line(c, _get(lr, "rank", "cdf", "threads_1", path_name), f"{path_name}, 1 thread")
    for name, row in (_get(d["ann"], "libraries") or {}).items():
        _cdf_line(e, row.get("query_cdf"), name)
    _finish(a, "Feed latency, one request at a time", "ms (log)", "share of requests", True)
    _finish(b, "Feed latency under load", "ms (log)", "share of requests", True)
    _finish(c, "Ranking 1,000 candidates, in process", "ms (log)", "share of requests", True)
    _finish(e, "Vector index, one query", "ms (log)", "share of queries", True)
    fig.suptitle("Latency distributions (CDF)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_throughput(r: Report, plt: Any, path: Path) -> None:
    d = r.data
    http = d["http"] or {}
    hr = http.get("rounds") or {}
    ingest: list[tuple[str, Any]] = [
        ("http: ingest events/s", _rounds_median(hr.get("ingest"), "events_per_s"))
    ]
    feed: list[tuple[str, Any]] = []
    unmean = _rounds_median(hr.get("feed_unloaded"), "mean_ms")
    feed += [
        ("http: one client", 1000 / unmean if unmean else None),
        ("http: concurrent", _rounds_median(hr.get("feed_concurrent"), "requests_per_s")),
    ]
    train: list[tuple[str, Any]] = []
    for n in ("scale-100k", "scale-1m"):
        s = d[n] or {}
        ph = s.get("phases") or {}
        for kind in ("videos", "users", "events"):
            ingest.append((f"{n}: load {kind}/s", _get(ph, "load", kind, "per_s")))
        feed += [
            (f"{n}: target", _get(ph, "loaded", "target_rps")),
            (f"{n}: achieved", _get(ph, "loaded", "achieved_rps")),
        ]
        train.append(
            (
                f"{n}: trainer examples/s, loaded",
                _get(ph, "loaded", "trainer", "examples_per_s_median"),
            )
        )
    lr = d["learning"] or {}
    train += [
        ("learning: log events/s", _rounds_median(_get(lr, "train", "rounds"), "events_per_s")),
        ("learning: examples/s", _rounds_median(_get(lr, "train", "rounds"), "examples_per_s")),
        (
            "shared bottom, model only",
            _rounds_median(_get(lr, "arch", "rounds"), "shared_bottom_model_examples_per_s"),
        ),
        (
            "MMoE, model only",
            _rounds_median(_get(lr, "arch", "rounds"), "mmoe_model_examples_per_s"),
        ),
    ]
    ann: list[tuple[str, Any]] = []
    for name, row in (_get(d["ann"], "libraries") or {}).items():
        if name.startswith("ivf-") and ann and ann[0][0].startswith("ivf"):
            continue  # writes are the same on every nprobe row
        ann.append((f"{name.split('-nprobe')[0]}: batches of 100", row.get("upserts_per_s")))
        if row.get("upserts_per_s_batch1"):
            ann.append((f"{name.split('-nprobe')[0]}: one per call", row["upserts_per_s_batch1"]))
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    _bars(axes[0, 0], ingest, "Ingest and catalog load", "items/s")
    _bars(axes[0, 1], feed, "Feed requests/s", "requests/s")
    _bars(axes[1, 0], train, "Training", "per s")
    _bars(axes[1, 1], ann, "Vector index upserts", "vectors/s")
    fig.suptitle("Throughput (medians)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_learning(r: Report, plt: Any, path: Path) -> None:
    lr = r.data["learning"] or {}
    rounds = _get(lr, "arch", "rounds") or []
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    for ax, head in zip(axes[0], ("like", "finish"), strict=True):
        curves = [x.get("learning_curve") or [] for x in rounds]
        steps = max((len(c) for c in curves), default=0)
        for who, style in (("shared_bottom", "-o"), ("mmoe", "-s"), ("heuristic", "--")):
            xs, ys = [], []
            for k in range(steps):
                pts = [c[k] for c in curves if len(c) > k]
                y = _median([_get(p, who, head) for p in pts])
                x = _median([_get(p, "shared_bottom", "examples_trained") for p in pts])
                if y is not None and x is not None:
                    xs.append(x)
                    ys.append(y)
            if xs:
                ax.plot(xs, ys, style, label=who.replace("_", " "), ms=4)
        _finish(
            ax,
            f"AUC {head} per training round (test then train; medians of {len(rounds)} runs)",
            "examples trained",
            "AUC",
        )
    ax = axes[1, 0]
    for n in ("scale-100k", "scale-1m"):
        curve = _get(r.data[n], "phases", "warmup", "learning_curve") or []
        for head, style in (("like", "-"), ("finish", "--")):
            pts = [(p["at_s"], _get(p, "auc", head)) for p in curve if _get(p, "auc", head)]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=f"{n}: {head}")
    _finish(ax, "Trainer's progressive AUC during warm-up (real server)", "s", "AUC")
    ax = axes[1, 1]
    trials = _get(lr, "fresh", "trials") or []
    for i, (key, label) in enumerate(
        (
            ("sparse_serving_s", "embedding row serving"),
            ("dense_serving_s", "dense weights serving"),
        )
    ):
        vals = [t.get(key) for t in trials if t.get(key) is not None]
        if vals:
            ax.plot([i] * len(vals), vals, "o", alpha=0.7, label=f"{label} ({len(vals)} trials)")
    if trials:
        ax.axhline(5, color="tab:blue", ls=":", lw=1)
        ax.axhline(60, color="tab:orange", ls=":", lw=1)
        ax.set_xticks([0, 1], ["sparse", "dense"])
    _finish(ax, "Freshness: POSTed event -> serving model (goals 5 s / 60 s)", "", "s")
    fig.suptitle("Learning curves and freshness")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_ann(r: Report, plt: Any, path: Path) -> None:
    libs = _get(r.data["ann"], "libraries") or {}
    fig, ax = plt.subplots(figsize=(7, 5))
    ivf = [
        (v["query_p50_ms"], v["recall_at_k"], v.get("nprobe"))
        for k, v in libs.items()
        if k.startswith("ivf-")
    ]
    if ivf:
        ax.plot([x[0] for x in ivf], [x[1] for x in ivf], "-o", label="VectorIndex IVF (nprobe)")
        for x, y, n in ivf:
            ax.annotate(str(n), (x, y), fontsize=7, xytext=(3, -8), textcoords="offset points")
    for k, v in libs.items():
        if not k.startswith("ivf-"):
            ax.plot(v["query_p50_ms"], v["recall_at_k"], "s", label=k)
    exact = _get(r.data["ann"], "exact_numpy_query_ms")
    if exact:
        ax.axvline(exact, color="grey", ls=":", label=f"exact numpy ({fmt(exact)} ms)")
    _finish(
        ax,
        f"Recall against latency, {fmt(_get(r.data['ann'], 'params', 'n'))} vectors",
        "query p50 ms (log)",
        "recall@k",
        True,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(results: Path, plots: bool = True) -> Path:
    """SUMMARY.md and plots/*.png from the JSON in `results`."""
    report = Report(results)
    text = report.build()
    if plots:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out = results / "plots"
        out.mkdir(exist_ok=True)
        made = []
        for name, fn in (
            ("latency_cdf", plot_latency),
            ("throughput", plot_throughput),
            ("learning_curves", plot_learning),
            ("ann_recall_latency", plot_ann),
        ):
            fn(report, plt, out / f"{name}.png")
            made.append(f"![{name}](plots/{name}.png)")
        text += "\n## Plots\n\n" + "\n\n".join(made) + "\n"
    path = results / "SUMMARY.md"
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run of minutes")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help=f"run only these parts (repeatable or comma list): {', '.join(BY_NAME)}",
    )
    p.add_argument(
        "--summary-only",
        action="store_true",
        help="rebuild SUMMARY.md and the plots from the JSON already there",
    )
    p.add_argument(
        "--results",
        type=Path,
        help="results directory (default benchmarks/results, --quick: .../quick)",
    )
    p.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="NAME=MINUTES",
        help="time limit of one part (repeatable); defaults: "
        + ", ".join(f"{x.name} {x.limit_min:g}" for x in PARTS)
        + " (--quick: a quarter, at least 10)",
    )
    p.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="NAME=ARGS",
        help="more arguments for one part's script, after its own (repeatable), e.g. "
        "ann='--libs ivf,hnswlib'; the summary shows the command as run",
    )
    p.add_argument("--no-plots", action="store_true", help="write SUMMARY.md only")
    args = p.parse_args(argv)
    only = [x.strip() for item in args.only for x in item.split(",") if x.strip()]
    unknown = sorted(set(only) - set(BY_NAME))
    if unknown:
        p.error(f"unknown parts {unknown}; choose from {', '.join(BY_NAME)}")
    extra = {}
    for item in args.extra:
        name, sep, more = item.partition("=")
        if not sep or name not in BY_NAME:
            p.error(f"--extra takes NAME=ARGS with a part's name, got {item!r}")
        extra[name] = more
    limits = {}
    for item in args.limit:
        name, _, minutes = item.partition("=")
        try:
            limits[name] = float(minutes)
        except ValueError:
            p.error(f"--limit takes NAME=MINUTES, got {item!r}")
        if name not in BY_NAME:
            p.error(f"--limit: unknown part {name!r}")
    results = (args.results or (RESULTS / "quick" if args.quick else RESULTS)).resolve()
    results.mkdir(parents=True, exist_ok=True)

    if not args.summary_only:
        manifest = load_manifest(results)
        if manifest.get("mode") != ("quick" if args.quick else "full"):
            manifest = {}  # figures of another mode are not mixed into this summary
        manifest.update(
            mode="quick" if args.quick else "full",
            machine=machine(),
            git=git_state(),
            finished=None,
        )
        parts = manifest.setdefault("parts", {})
        started = time.monotonic()
        try:
            for part in PARTS:
                if only and part.name not in only:
                    continue
                parts[part.name] = run_part(
                    part, args.quick, results, limits.get(part.name), extra.get(part.name, "")
                )
                (results / "suite.json").write_text(json.dumps(manifest, indent=2) + "\n")
                if parts[part.name].get("interrupted"):
                    break
        finally:
            manifest["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            manifest["suite_seconds"] = round(time.monotonic() - started, 1)
            (results / "suite.json").write_text(json.dumps(manifest, indent=2) + "\n")
    path = write_report(results, plots=not args.no_plots)
    print(f"\n{path.read_text()}\nwrote {path}")
    if not args.summary_only:
        failed = [
            k
            for k, v in load_manifest(results).get("parts", {}).items()
            if v.get("status") != "ok" and (not only or k in only)
        ]
        return 1 if failed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
