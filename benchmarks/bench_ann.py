"""Approximate nearest-neighbour libraries for video recall, on this machine.

Builds an inner-product index over N unit vectors (clustered, as learned video vectors
are), then measures for each library: build time, recall@100 against exact search (numpy,
the oracle), single-query latency p50/p99 (one query at a time, one thread), upserts/s of
new vectors into the built index, whether removals are supported, and the resident memory
the index added to the process. Candidates (`--libs`, default all):

- ivf: the product's own `reelrank.index.vectors.VectorIndex` (faiss IVF, fp16 lists, with a
  hashtable direct map, trained by `build_now()`), measured at each `--nprobe` value. Its
  writes are measured through the product's API: upserts of new keys in batches of 1 and
  of 100, re-upserts of existing keys (batches of 1 and of 100) and removals (batches of 1
  and of 100), each per key per second; removed keys are checked to be absent afterwards.
- faiss-hnsw (alias faiss): faiss IndexHNSWFlat.
- hnswlib.

hnswlib comes with `pip install -e '.[ann]'`. Prints one line of figures per library (and
per nprobe), a summary table, and writes benchmarks/results/bench_ann.json (with each
row's single-query latency quantiles, `query_cdf`).
Run: `python benchmarks/bench_ann.py --n 1000000 --libs ivf,hnswlib`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.latency import cdf  # noqa: E402


def make_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around 256 topic centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(256, dim)).astype(np.float32)
    x = centres[rng.integers(256, size=n)] + 0.6 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_topk(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(queries), k), dtype=np.int64)
    for i in range(0, len(queries), 64):
        scores = queries[i : i + 64] @ base.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
        out[i : i + 64] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(xs, q)) * 1000, 3)


def brief(res: dict[str, Any]) -> dict[str, Any]:
    """A result without its latency quantiles, for the printed line."""
    return {k: v for k, v in res.items() if k != "query_cdf"}


def rss_mb(trim: bool = False) -> float:
    """Resident memory of this process now, in MB (Linux; 0 elsewhere). With `trim`, freed
    heap memory is first handed back to the system (glibc), so that a baseline taken before
    a build is not inflated by earlier work whose memory the build would reuse."""
    if trim:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def per_s(count: int, seconds: float) -> int:
    return round(count / seconds) if seconds > 0 else 0


def latencies(search: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[float]]:
    """Results of a first pass (also the warm-up), then per-query times of a second one."""
    found = np.full((len(queries), k), -1, dtype=np.int64)
    for i, q in enumerate(queries):
        got = search(q, k)
        found[i, : len(got)] = got
    lat = []
    for q in queries:
        s = time.perf_counter()
        search(q, k)
        lat.append(time.perf_counter() - s)
    return found, lat


class Faiss:
    name = "faiss-hnsw"

    def __init__(self, dim: int, m: int, ef_construction: int, ef_search: int) -> None:
        import faiss

        faiss.omp_set_num_threads(1)
        self.index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = ef_construction
        self.index.hnsw.efSearch = ef_search

    def add(self, x: np.ndarray) -> None:
        self.index.add(x)

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        return self.index.search(q, k)[1]

    def remove(self, ids: np.ndarray) -> bool:
        try:
            self.index.remove_ids(ids)
            return True
        except RuntimeError:
            return False  # HNSW in faiss cannot delete; a filter at query time would be needed


class Hnswlib:
    name = "hnswlib"

    def __init__(self, dim: int, m: int, ef_construction: int, ef_search: int, cap: int) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=dim)
        self.index.init_index(max_elements=cap, M=m, ef_construction=ef_construction,
                              allow_replace_deleted=True)  # fmt: skip
        self.index.set_ef(ef_search)
        self.index.set_num_threads(1)
        self.n = 0

    def add(self, x: np.ndarray) -> None:
        ids = np.arange(self.n, self.n + len(x))
        self.index.add_items(x, ids)
        self.n += len(x)

    def search(self, q: np.ndarray, k: int) -> np.ndarray:
        return self.index.knn_query(q, k=k)[0].astype(np.int64)

    def remove(self, ids: np.ndarray) -> bool:
        for i in ids.tolist():
            self.index.mark_deleted(i)
        return True


def run(lib: Any, base: np.ndarray, queries: np.ndarray, truth: np.ndarray, upserts: np.ndarray,
        k: int, rss0: float) -> dict[str, Any]:  # fmt: skip
    """`rss0`: resident memory before the library's index was created."""
    t0 = time.perf_counter()
    for i in range(0, len(base), 50_000):
        lib.add(base[i : i + 50_000])
    build_s = time.perf_counter() - t0
    index_mb = rss_mb() - rss0
    found = np.vstack([lib.search(q[None, :], k) for q in queries])
    lat = []
    for q in queries:
        s = time.perf_counter()
        lib.search(q[None, :], k)
        lat.append(time.perf_counter() - s)
    t0 = time.perf_counter()
    for i in range(0, len(upserts), 100):
        lib.add(upserts[i : i + 100])
    upsert_s = time.perf_counter() - t0
    removed = lib.remove(np.arange(10, dtype=np.int64))
    after = lib.search(base[:1], k)[0].tolist() if removed else []
    return {
        "build_s": round(build_s, 1),
        "recall_at_k": round(recall_at(found, truth), 4),
        "query_p50_ms": pct(lat, 50),
        "query_p99_ms": pct(lat, 99),
        "query_cdf": cdf(lat, digits=4),
        "upserts_per_s": round(len(upserts) / upsert_s),
        "removal_supported": removed,
        "removed_absent_from_results": removed and not (set(range(10)) & set(after)),
        "index_rss_mb": round(index_mb),
    }


def run_ivf(base: np.ndarray, queries: np.ndarray, truth: np.ndarray, upserts: np.ndarray,
            k: int, nprobes: list[int], writes: int) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The product's VectorIndex: one build, searched at each nprobe; writes measured once
    (they do not depend on nprobe) and reported on every row."""
    from reelrank.index.vectors import VectorIndex

    n, dim = base.shape
    rss0 = rss_mb(trim=True)
    # ann_min out of reach: no background build while loading; build_now() trains it
    idx = VectorIndex(dim, ann_min=2**62, nprobe=nprobes[0], background=False)
    t0 = time.perf_counter()
    for i in range(0, n, 50_000):
        idx.upsert(np.arange(i, min(i + 50_000, n)), base[i : i + 50_000])
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    idx.build_now()
    train_s = time.perf_counter() - t0
    assert idx.approximate, "build_now() did not swap the IVF index in"
    index_mb = rss_mb() - rss0
    nlist = int(idx._ivf.nlist)

    def search(q: np.ndarray, kk: int) -> np.ndarray:
        return idx.search(q, kk)[0]

    rows: dict[str, dict[str, Any]] = {}
    for nprobe in nprobes:
        idx._ivf.nprobe = nprobe
        found, lat = latencies(search, queries, k)
        rows[f"ivf-nprobe{nprobe}"] = {
            "nprobe": nprobe,
            "nlist": nlist,
            "build_s": round(load_s + train_s, 1),
            "load_s": round(load_s, 1),
            "train_add_s": round(train_s, 1),
            "recall_at_k": round(recall_at(found, truth), 4),
            "query_p50_ms": pct(lat, 50),
            "query_p99_ms": pct(lat, 99),
            "query_cdf": cdf(lat, digits=4),
        }
    idx._ivf.nprobe = nprobes[0]

    # writes into the built index, through the product's API
    w = min(writes, len(upserts))
    fresh = np.arange(n, n + len(upserts), dtype=np.int64)  # new keys
    t0 = time.perf_counter()
    for i in range(w):
        idx.upsert(fresh[i : i + 1], upserts[i : i + 1])
    new1 = per_s(w, time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(w, len(upserts), 100):
        idx.upsert(fresh[i : i + 100], upserts[i : i + 100])
    new100 = per_s(len(upserts) - w, time.perf_counter() - t0)
    rng = np.random.default_rng(4)
    existing = rng.permutation(n)[: len(upserts) + w].astype(np.int64)  # distinct keys
    moved = base[rng.permutation(n)[: len(existing)]]  # another stored vector each
    t0 = time.perf_counter()
    for i in range(w):
        idx.upsert(existing[i : i + 1], moved[i : i + 1])
    re1 = per_s(w, time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(w, len(existing), 100):
        idx.upsert(existing[i : i + 100], moved[i : i + 100])
    re100 = per_s(len(existing) - w, time.perf_counter() - t0)
    gone = rng.permutation(np.concatenate([rng.permutation(n)[: len(upserts)], fresh[:w]]))
    t0 = time.perf_counter()
    for i in range(w):
        idx.remove(gone[i : i + 1])
    rm1 = per_s(w, time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(w, len(gone), 100):
        idx.remove(gone[i : i + 100])
    rm100 = per_s(len(gone) - w, time.perf_counter() - t0)
    # the written keys are where they should be: new keys found by their own vector,
    # removed keys never returned (by their old vector or by the benchmark queries)
    gone_set = set(gone.tolist())
    kept = np.setdiff1d(fresh, gone)[:200]
    new_found = np.mean([search(upserts[kk - n], 1)[:1].tolist() == [kk] for kk in kept])
    old_vecs = np.where((gone < n)[:, None], base[np.minimum(gone, n - 1)],
                        upserts[np.maximum(gone - n, 0)])  # fmt: skip
    leaked = sum(len(gone_set & set(search(v, k).tolist())) for v in old_vecs[:300])
    leaked += sum(len(gone_set & set(search(q, k).tolist())) for q in queries[:100])
    writes_row = {
        "upserts_per_s": new100,  # new keys, batches of 100 (as measured for the others)
        "upserts_per_s_batch1": new1,
        "reupserts_per_s": re100,
        "reupserts_per_s_batch1": re1,
        "removals_per_s": rm100,
        "removals_per_s_batch1": rm1,
        "removal_supported": True,
        "removed_absent_from_results": leaked == 0,
        "new_keys_found_first": round(float(new_found), 4),
        "live_after_writes": len(idx),
        "index_rss_mb": round(index_mb),
    }
    for row in rows.values():
        row.update(writes_row)
    return rows


def print_table(libraries: dict[str, dict[str, Any]], targets: dict[str, dict[str, bool]],
                k: int) -> None:  # fmt: skip
    """One row per library (per nprobe for ivf); upserts are new keys, batches of 100 and
    of 1 (ivf only); `ok` is every target met."""
    cols = [("library", 16), ("build_s", 8), (f"recall@{k}", 10), ("p50_ms", 7),
            ("p99_ms", 7), ("ups/s", 7), ("ups1/s", 7), ("reups/s", 8), ("reups1/s", 9),
            ("rm/s", 7), ("rm1/s", 7), ("rss_mb", 7), ("ok", 3)]  # fmt: skip
    print(" ".join(f"{c:>{w}}" for c, w in cols))
    for name, r in libraries.items():
        cells = [name, r["build_s"], r["recall_at_k"], r["query_p50_ms"], r["query_p99_ms"],
                 r["upserts_per_s"], r.get("upserts_per_s_batch1", "-"),
                 r.get("reupserts_per_s", "-"), r.get("reupserts_per_s_batch1", "-"),
                 r.get("removals_per_s", "-" if r["removal_supported"] else "no"),
                 r.get("removals_per_s_batch1", "-"), r.get("index_rss_mb", "-"),
                 "yes" if all(targets[name].values()) else "no"]  # fmt: skip
        print(" ".join(f"{c!s:>{w}}" for c, (_, w) in zip(cells, cols, strict=True)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--upserts", type=int, default=20_000)
    p.add_argument("--m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef-search", type=int, default=400)
    p.add_argument("--libs", default="ivf,hnswlib,faiss-hnsw",
                   help="comma list of ivf, hnswlib, faiss-hnsw (alias faiss)")  # fmt: skip
    p.add_argument("--nprobe", default="8,16,24,32,48,64,96,128",
                   help="comma list of nprobe values for ivf")  # fmt: skip
    p.add_argument("--writes", type=int, default=5_000,
                   help="ivf: keys written one at a time for the batch-of-1 figures")  # fmt: skip
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "bench_ann.json"))
    args = p.parse_args()
    libs = [{"faiss": "faiss-hnsw"}.get(x.strip(), x.strip()) for x in args.libs.split(",")]
    unknown = set(libs) - {"ivf", "hnswlib", "faiss-hnsw"}
    if unknown:
        p.error(f"unknown --libs: {', '.join(sorted(unknown))}")
    nprobes = [int(x) for x in args.nprobe.split(",")]
    base = make_vectors(args.n, args.dim, 1)
    queries = make_vectors(args.queries, args.dim, 2)
    upserts = make_vectors(args.upserts, args.dim, 3)
    t0 = time.perf_counter()
    truth = exact_topk(base, queries, args.k)
    exact_s = (time.perf_counter() - t0) / len(queries)
    out: dict[str, Any] = {
        "benchmark": "bench_ann",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "params": vars(args),
        "exact_numpy_query_ms": round(exact_s * 1000, 2),
        "libraries": {},
    }
    print(f"exact search (numpy, batched by 64): {out['exact_numpy_query_ms']} ms per query")
    for name in libs:
        if name == "ivf":
            rows = run_ivf(base, queries, truth, upserts, args.k, nprobes, args.writes)
            for row_name, res in rows.items():
                out["libraries"][row_name] = res
                print(row_name, json.dumps(brief(res)), flush=True)
            continue
        rss0 = rss_mb(trim=True)
        if name == "faiss-hnsw":
            lib: Any = Faiss(args.dim, args.m, args.ef_construction, args.ef_search)
        else:
            lib = Hnswlib(args.dim, args.m, args.ef_construction, args.ef_search,
                          args.n + args.upserts)  # fmt: skip
        res = run(lib, base, queries, truth, upserts, args.k, rss0)
        out["libraries"][lib.name] = res
        print(lib.name, json.dumps(brief(res)), flush=True)
        del lib
    out["targets"] = {}
    for name, r in out["libraries"].items():
        t = {
            "recall>=0.95": r["recall_at_k"] >= 0.95,
            "p99<=2ms": r["query_p99_ms"] <= 2.0,
            "upserts>=5000/s": r["upserts_per_s"] >= 5000,
        }
        if "upserts_per_s_batch1" in r:
            t["upserts_batch1>=5000/s"] = r["upserts_per_s_batch1"] >= 5000
        out["targets"][name] = t
    print("targets:", json.dumps(out["targets"]))
    print_table(out["libraries"], out["targets"], args.k)
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
