"""Approximate nearest-neighbour libraries for video recall, on this machine.

Builds an inner-product index over N unit vectors (clustered, as learned video vectors
are), then measures for each library: build time, recall@100 against exact search (numpy,
the oracle), single-query latency p50/p99, upserts/s of new vectors into the built index,
and whether removals are supported. Candidates: faiss (IndexHNSWFlat) and hnswlib; install
them with `pip install -e '.[ann]'`. Prints the figures and writes
benchmarks/results/bench_ann.json. Run: `python benchmarks/bench_ann.py --n 1000000`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


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
        k: int) -> dict[str, Any]:  # fmt: skip
    t0 = time.perf_counter()
    for i in range(0, len(base), 50_000):
        lib.add(base[i : i + 50_000])
    build_s = time.perf_counter() - t0
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
        "upserts_per_s": round(len(upserts) / upsert_s),
        "removal_supported": removed,
        "removed_absent_from_results": removed and not (set(range(10)) & set(after)),
    }


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
    p.add_argument("--libs", default="faiss,hnswlib")
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "bench_ann.json"))
    args = p.parse_args()
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
    for name in args.libs.split(","):
        if name == "faiss":
            lib: Any = Faiss(args.dim, args.m, args.ef_construction, args.ef_search)
        else:
            lib = Hnswlib(args.dim, args.m, args.ef_construction, args.ef_search,
                          args.n + args.upserts)  # fmt: skip
        res = run(lib, base, queries, truth, upserts, args.k)
        out["libraries"][lib.name] = res
        print(lib.name, json.dumps(res), flush=True)
        del lib
    out["targets"] = {
        name: {
            "recall>=0.95": r["recall_at_k"] >= 0.95,
            "p99<=2ms": r["query_p99_ms"] <= 2.0,
            "upserts>=5000/s": r["upserts_per_s"] >= 5000,
        }
        for name, r in out["libraries"].items()
    }
    print("targets:", json.dumps(out["targets"]))
    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
