"""Process roles: which parts of reelrank a process runs (`roles`, `serve --role`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from reelrank.engine import Engine
from reelrank.errors import ConfigError
from reelrank.grammar import ROLES, parse_roles

from .conftest import ADMIN, KEYS, make_settings
from .server import ServerProcess

SQLITE = "sqlite:///x.db"
CLI = (sys.executable, "-m", "reelrank.cli")


def test_roles_parse_and_name_what_is_wrong() -> None:
    assert parse_roles("all", SQLITE) == frozenset(ROLES)
    assert parse_roles(" API, worker,lifecycle ", SQLITE) == {"api", "worker", "lifecycle"}
    assert parse_roles("trainer", SQLITE) == {"trainer"}
    assert parse_roles("api,worker,lifecycle,trainer", "memory://") == frozenset(ROLES)
    with pytest.raises(ConfigError, match=r"unknown or no roles \['ranker'\]"):
        parse_roles("api,ranker", SQLITE)
    with pytest.raises(ConfigError, match="unknown or no roles"):
        parse_roles(" , ", SQLITE)
    # Over an embedded store the online state is the serving process's own.
    for split in ("api", "worker", "lifecycle,trainer", "api,worker"):
        with pytest.raises(ConfigError, match="api, worker and lifecycle together"):
            parse_roles(split, SQLITE)
    with pytest.raises(ConfigError, match="setting roles"):
        make_settings(Path("."), roles="api")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="threads have no niceness")
def test_rebuild_threads_yield_the_cpu_and_request_side_jobs_do_not(tmp_path: Path) -> None:
    """The index rebuilds and the related-videos fit run at `rebuild_nice` below the
    process; the jobs requests wait on (model sync, the log follower, snapshots) and the
    process itself stay where they were."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    eng = Engine(make_settings(tmp_path, rebuild_nice=7)).open()
    try:
        threads = {t.name: t for t in eng._threads}

        def nice_of(name: str) -> int:
            native = threads[name].native_id
            assert native is not None
            return os.getpriority(os.PRIO_PROCESS, native)

        low = ("reelrank-retrieval", "reelrank-related")
        deadline = time.monotonic() + 10
        while any(nice_of(n) != min(19, base + 7) for n in low) and time.monotonic() < deadline:
            time.sleep(0.01)  # each thread lowers itself as it starts
        for name in low:
            assert nice_of(name) == min(19, base + 7), name
        for name in ("reelrank-model-sync", "reelrank-log-follower", "reelrank-snapshot"):
            assert nice_of(name) == base, name
        assert os.getpriority(os.PRIO_PROCESS, 0) == base  # this thread, the process's
    finally:
        eng.close()


def test_a_process_without_the_trainer_role_starts_no_trainer(tmp_path: Path) -> None:
    without = make_settings(tmp_path, trainer="thread", roles="api,worker,lifecycle")
    eng = Engine(without).open()
    try:
        assert eng.trainer is None
        assert eng.model_status()["serving"]["trainer_mode"] == "off"
        names = {t.name for t in eng._threads}
        assert "reelrank-trainer" not in names and "reelrank-log-follower" in names
    finally:
        eng.close()
    eng = Engine(make_settings(tmp_path / "all", trainer="thread")).open()
    try:
        assert eng.trainer is not None
        assert "reelrank-trainer" in {t.name for t in eng._threads}
        assert eng.model_status()["serving"]["trainer_mode"] == "thread"
    finally:
        eng.close()


def test_an_api_process_serves_what_a_trainer_process_publishes(tmp_path: Path) -> None:
    """`serve` without the trainer role and `serve --role trainer` over one data
    directory: the trainer's published status reaches the api process, which started no
    trainer of its own; the trainer stops cleanly on SIGTERM."""
    server = ServerProcess(
        tmp_path, KEYS, REELRANK_ROLES="api,worker,lifecycle", REELRANK_TRAINER="process"
    ).start()
    trainer = None
    try:
        model = httpx.get(f"{server.url}/v1/model", headers=ADMIN).json()
        assert model["serving"]["trainer_mode"] == "off" and model["trainer"] is None
        env = {k: v for k, v in os.environ.items() if not k.startswith("REELRANK_")}
        trainer = subprocess.Popen(
            [*CLI, "serve", "--role", "trainer", "--data-dir", str(tmp_path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            model = httpx.get(f"{server.url}/v1/model", headers=ADMIN).json()
            if model["trainer"] is not None:
                break
            assert trainer.poll() is None, trainer.stdout.read() if trainer.stdout else ""
            time.sleep(0.5)
        assert model["trainer"] is not None, "the trainer's status never reached the api"
        assert "examples_trained" in model["trainer"]
        trainer.terminate()
        out, _ = trainer.communicate(timeout=60)
        assert trainer.returncode == 0, out.decode()
        assert b"training from sqlite:///" in out
    finally:
        if trainer is not None and trainer.poll() is None:
            trainer.kill()
            trainer.wait()
        server.stop()


def test_serve_names_a_role_split_it_cannot_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REELRANK_")}
    got = subprocess.run(
        [*CLI, "serve", "--role", "worker", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 2
    assert "setting roles: worker over sqlite://" in got.stderr
