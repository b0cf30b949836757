"""Serving the learned ranker: parameters applied live from the channel, and the scorer.

Sparse deltas are written into the serving tables row by row (each row write is one
numpy call under the GIL, so a request never sees a torn row, only a mix of rows from two
adjacent syncs); dense updates build a new network and swap the reference. Requests never
wait for either.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import numpy as np
import orjson

from ..arrays import looked_up
from ..state.catalog import VideoTable
from ..storage.codec import decode
from ..storage.params import ParamChannel
from ..types import Query
from .features import CONTEXT_SLOTS, SINGLE_SLOTS, TAG_SLOT, CandidateFeatures, history_of
from .features import context_of as context_of_query
from .live import Aligned, Live, LiveSequence, LiveTwoTower
from .model import NumpyRanker, RankerConfig
from .sequence import SEQ_EVENTS, SEQ_SLOT
from .tables import ServingTable
from .two_tower import HISTORY, TT_SLOTS, USER_CONTEXT, tt_slot

log = logging.getLogger(__name__)

_CATALOG_SLOTS = ("video", "creator", "sound", TAG_SLOT)


_ROW_KEYED = ("video", tt_slot("video"), SEQ_SLOT)  # aligned by catalog row, not an IdMap


class ModelServer:
    """Holds the serving model and keeps it in step with the parameter channel."""

    def __init__(
        self,
        channel: ParamChannel,
        catalog: VideoTable,
        min_examples: int,
        policy: str = "champion",
    ) -> None:
        self.channel = channel
        self.catalog = catalog
        self.min_examples = min_examples
        self.policy = policy  # "champion": serve only while it beats the heuristic
        self.after = 0
        self.live: Live | None = None
        self.trainer_status: dict[str, Any] = {}
        self.last_applied = 0.0
        self.fulls_skipped = 0  # full models not rebuilt: their version was already live
        self._apply_lock = threading.Lock()  # one applier at a time; requests never take it
        self._align_lock = threading.Lock()  # brief: catalog-id resolution and row updates

    # -- applying ------------------------------------------------------------------------
    def bootstrap(self) -> None:
        """Start from the newest full snapshot, then apply what came after it."""
        full = self.channel.latest("full", blob=False)  # its seq: poll reads it
        if full is not None:
            with self._apply_lock:
                self.after = full[0] - 1
        self.poll()

    def poll(self) -> int:
        """Apply every new channel entry; return how many."""
        with self._apply_lock:
            n = 0
            while True:
                entries = self.channel.read(self.after, 16, full_blobs=False)
                if not entries:
                    return n
                for seq, kind, version, blob in entries:
                    try:
                        # A full model at the version held was sent as sparse and dense
                        # entries first (`Checkpoints.checkpoint`): not read, not rebuilt.
                        if kind != "full":
                            self._apply(kind, blob)
                        elif self.live is not None and version == self.version():
                            self.fulls_skipped += 1
                        elif (full := self.channel.blob(seq)) is not None:
                            self._apply(kind, full)  # (None once pruned: a newer one follows)
                    except Exception:
                        log.exception("could not apply %s parameters (seq %d)", kind, seq)
                    self.after = seq
                    n += 1
                self.last_applied = time.time()

    def _apply(self, kind: str, blob: bytes) -> None:
        if kind == "status":
            self.trainer_status = orjson.loads(blob)
            return
        payload = decode(blob)
        live = self.live
        if kind == "sparse":
            if live is not None:
                self._apply_rows(live, payload["slots"])
                live.sparse_version = int(payload["sparse_version"])
            return
        config = RankerConfig.from_json(json.loads(payload["config"]))
        module = NumpyRanker(config, payload["state"])
        tt = LiveTwoTower(payload["tt"], int(payload["dense_version"])) if "tt" in payload else None
        seq = (
            LiveSequence(payload["seq"], int(payload["dense_version"]))
            if "seq" in payload
            else None
        )
        if kind == "full":
            tables = {s: ServingTable(s, config.dim) for s in (*SINGLE_SLOTS, TAG_SLOT)}
            aligned = {
                "video": Aligned(None),
                "creator": Aligned(self.catalog.creators),
                "sound": Aligned(self.catalog.sounds),
                TAG_SLOT: Aligned(self.catalog.tags),
            }
            if tt is not None:
                tables.update({s: ServingTable(s, tt.config.dim) for s in TT_SLOTS})
                aligned.update(
                    {
                        tt_slot("video"): Aligned(None),
                        tt_slot("creator"): Aligned(self.catalog.creators),
                        tt_slot("sound"): Aligned(self.catalog.sounds),
                        tt_slot(TAG_SLOT): Aligned(self.catalog.tags),
                    }
                )
            if seq is not None:
                tables[SEQ_SLOT] = ServingTable(SEQ_SLOT, seq.config.dim)
                aligned[SEQ_SLOT] = Aligned(None)
            fresh = Live(
                config=config,
                module=module,
                tables=tables,
                aligned=aligned,
                dense_version=int(payload["dense_version"]),
                sparse_version=int(payload["sparse_version"]),
                examples=int(payload["examples"]),
                tt=tt,
                seq=seq,
            )
            self._apply_rows(fresh, payload["slots"])
            self._resolve_new_catalog_ids(fresh)
            self.live = fresh  # the swap: requests from here on read the new model
        elif kind == "dense" and live is not None:
            if config != live.config:
                log.warning("dense weights for another ranker config wait for a full snapshot")
                return
            live.module = module
            if tt is not None and live.tt is not None:
                live.tt = tt
            if seq is not None and live.seq is not None and seq.config == live.seq.config:
                live.seq = seq
            live.dense_version = int(payload["dense_version"])
            live.examples = int(payload["examples"])

    def _apply_rows(self, live: Live, slots: dict[str, dict[str, Any]]) -> None:
        for slot, delta in slots.items():
            table = live.tables.get(slot)
            if table is None:
                continue
            changed = table.apply({**delta, "vectors": np.asarray(delta["vectors"])})
            aligned = live.aligned.get(slot)
            if aligned is None or not changed or aligned.known == 0:
                continue  # nothing resolved yet: `_resolve_new_catalog_ids` does it all
            with self._align_lock:
                if slot in _ROW_KEYED:
                    lookup = self.catalog.rows.get
                else:
                    assert aligned.names is not None
                    lookup = aligned.names.index.get
                ints = looked_up(lookup, changed, -1)
                rows = looked_up(table.rows.get, changed, 0)
                ok = (ints >= 0) & (ints < aligned.known)
                aligned.set(ints[ok], rows[ok])

    def _resolve_new_catalog_ids(self, live: Live) -> None:
        """Ids the catalog interned since the last look get their serving rows (one C-level
        pass of dict lookups per slot, not a Python call per id: a full model apply at a
        million videos resolves every id of every slot)."""
        with self._align_lock:
            for slot, aligned in live.aligned.items():
                table = live.tables[slot]
                if slot in _ROW_KEYED:
                    records = self.catalog.records[aligned.known :]
                    names = [v.id if v is not None else "" for v in records]
                else:
                    assert aligned.names is not None
                    names = aligned.names.names[aligned.known :]
                n = len(names)
                rows = looked_up(table.rows.get, names, 0)
                aligned.set(np.arange(aligned.known, aligned.known + n), rows)
                aligned.known += n

    # -- serving -------------------------------------------------------------------------
    @property
    def examples(self) -> int:
        return self.live.examples if self.live is not None else 0

    def trained(self) -> bool:
        """Loaded and trained on at least `min_examples` examples."""
        return self.live is not None and self.live.examples >= self.min_examples

    @property
    def champion(self) -> dict[str, Any]:
        """The trainer's latest champion/challenger figures ({} before any)."""
        found: dict[str, Any] = self.trainer_status.get("champion") or {}
        return found

    def ready(self) -> bool:
        """The learned ranker should score requests: trained, and (under the champion
        policy) ordering recent traffic better than the heuristic."""
        if not self.trained():
            return False
        return self.policy != "champion" or self.champion.get("champion") == "learned"

    def not_ready_note(self) -> str:
        """Why the heuristic scores instead, in words."""
        if not self.trained():
            return f"learned ranker warming up ({self.examples} of {self.min_examples} examples)"
        c = self.champion
        if not c or c.get("learned") is None or c.get("pairs", 0) < c.get("min_pairs", 0):
            return (
                f"learned ranker on trial ({c.get('pairs', 0)} of {c.get('min_pairs', '?')} "
                "page pairs compared with the heuristic)"
            )
        return (
            f"the heuristic orders recent pages better ({c['heuristic']:.3f} against "
            f"{c['learned']:.3f} of pairs for the learned ranker)"
        )

    # -- the sequence model -------------------------------------------------------------
    def sequence_version(self) -> tuple[int, int] | None:
        """(dense, sparse) versions of the loaded sequence model, None before one."""
        live = self.live
        if live is None or live.seq is None or not self.trained():
            return None
        return live.seq.version, live.sparse_version

    def seq_video_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The sequence model's item vectors of catalog rows: (n,) -> (n, d)."""
        live = self.live
        assert live is not None and live.seq is not None
        self._ensure_resolved(live)  # catalog rows added since the last look
        table = live.tables[SEQ_SLOT]
        return np.asarray(table.weight[live.aligned[SEQ_SLOT].gather(rows)])

    def seq_user_vector(self, query: Query) -> np.ndarray | None:
        """The user's next-video vector from their latest engagements (cached on the
        query), None without a model or an engagement."""
        if "seq_user" in query.cache:
            found: np.ndarray | None = query.cache["seq_user"]
            return found
        vec = None
        live = self.live
        if live is not None and live.seq is not None and query.user is not None:
            history: list[str] = []
            for video_id, kind, _ in list(query.user.session):
                if kind in SEQ_EVENTS:
                    if history and history[-1] == video_id:
                        continue
                    if video_id in history:
                        history.remove(video_id)
                    history.append(video_id)
            history = history[-live.seq.config.max_len :]
            if history:
                table = live.tables[SEQ_SLOT]
                vec = live.seq.encoder.last(table.weight[table.lookup(history)])
        query.cache["seq_user"] = vec
        return vec

    def sequence_scores(self, query: Query, rows: np.ndarray) -> np.ndarray | None:
        """The sequence model's score of each row for this user, None without a model."""
        if self.sequence_version() is None:
            return None
        user = self.seq_user_vector(query)
        if user is None:
            return None
        return self.seq_video_vectors(rows) @ user

    def version(self) -> str:
        live = self.live
        return f"mtl-{live.dense_version}.{live.sparse_version}" if live else "mtl-none"

    def _ensure_resolved(self, live: Live) -> None:
        c = self.catalog
        if any(
            al.known < (len(c.records) if al.names is None else len(al.names))
            for al in live.aligned.values()
        ):
            self._resolve_new_catalog_ids(live)

    def _video_side(self, live: Live, rows: np.ndarray, prefix: str = "") -> dict[str, np.ndarray]:
        """Serving rows of the video-side slots (the ranker's, or with prefix "tt_" the
        two-tower's) for catalog rows."""
        self._ensure_resolved(live)
        c = self.catalog
        a = live.aligned
        return {
            "video": a[prefix + "video"].gather(rows),
            "creator": a[prefix + "creator"].gather(c.creator[rows].astype(np.int64)),
            "sound": a[prefix + "sound"].gather(c.sound[rows].astype(np.int64)),
            TAG_SLOT: a[prefix + TAG_SLOT].gather(c.tag_ids[rows].astype(np.int64)),
        }

    # -- the two-tower retrieval model ---------------------------------------------------
    def retrieval_version(self) -> tuple[int, int] | None:
        """(dense, sparse) versions of the loaded retrieval model, None before one."""
        live = self.live
        if live is None or live.tt is None or not self.trained():
            return None
        return live.tt.version, live.sparse_version

    def tt_video_vectors(self, rows: np.ndarray) -> np.ndarray:
        """Two-tower vectors of catalog rows: (n,) -> (n, out)."""
        live = self.live
        assert live is not None and live.tt is not None
        side = self._video_side(live, rows, prefix="tt_")
        t = live.tables
        tag_ints = self.catalog.tag_ids[rows]
        tags = t[tt_slot(TAG_SLOT)].weight[side[TAG_SLOT]]  # (n, T, d)
        mask = (tag_ints >= 0).astype(np.float32)
        pooled = (tags * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1.0)
        x = np.concatenate(
            [t[tt_slot(s)].weight[side[s]] for s in ("video", "creator", "sound")] + [pooled],
            axis=1,
        )
        return live.tt.video(x)

    def tt_user_vector(self, query: Query) -> np.ndarray | None:
        """The two-tower vector of the request's user and context, None before a model."""
        live = self.live
        if live is None or live.tt is None:
            return None
        ctx = context_of_query(query)
        t = live.tables
        parts = [t[tt_slot(s)].weight[t[tt_slot(s)].lookup([ctx[s]])[0]] for s in USER_CONTEXT]
        history = history_of(query, HISTORY)
        if history:
            video = t[tt_slot("video")]
            parts.append(video.weight[video.lookup(list(history))].mean(axis=0))
        else:
            parts.append(np.zeros(live.tt.config.dim, dtype=np.float32))
        return live.tt.user(np.concatenate(parts)[None, :])[0]

    def dot(self, query: Query, rows: np.ndarray) -> np.ndarray:
        """user . video embeddings, the pre-ranker's learned signal. (n,) -> (n,)."""
        live = self.live
        assert live is not None
        user = live.tables["user"]
        u = user.weight[user.lookup([query.model_user_id])[0]]
        video_rows = self._video_side(live, rows)["video"]
        return np.asarray(live.tables["video"].weight[video_rows] @ u)

    def predict(self, feats: CandidateFeatures) -> np.ndarray:
        """P(action) for each candidate and head: (n, len(HEADS))."""
        live = self.live
        assert live is not None
        module = live.module
        rows = feats.rows
        n, dim = len(rows), live.config.dim
        side = self._video_side(live, rows)
        single = np.empty((n, len(SINGLE_SLOTS), dim), dtype=np.float32)
        for j, slot in enumerate(SINGLE_SLOTS):
            table = live.tables[slot]
            if slot in CONTEXT_SLOTS:
                single[:, j] = table.weight[table.lookup([feats.context.get(slot)])[0]]
            else:
                single[:, j] = table.weight[side[slot]]
        tag_ints = self.catalog.tag_ids[rows]
        tags = live.tables[TAG_SLOT].weight[side[TAG_SLOT]]  # (n, T, d)
        mask = (tag_ints >= 0).astype(np.float32)
        logits = module(single, tags, mask, feats.dense)
        out: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(logits, -60.0, 60.0)))
        return out

    def status(self) -> dict[str, Any]:
        live = self.live
        return {
            "loaded": live is not None,
            "ready": self.ready(),
            "serving": "learned" if self.ready() else "heuristic",
            "note": None if self.ready() else self.not_ready_note(),
            "policy": self.policy,
            "champion": self.champion or None,
            "model_version": self.version() if live is not None else None,
            "examples": self.examples,
            "min_examples": self.min_examples,
            "dense_version": live.dense_version if live else 0,
            "sparse_version": live.sparse_version if live else 0,
            "embedding_rows": {s: len(t.rows) for s, t in live.tables.items()} if live else {},
            "last_applied_age_s": round(time.time() - self.last_applied, 3)
            if self.last_applied
            else None,
        }
