"""Read-only views for operators: health, the dashboard's overview, the serving model's
status and each recall channel's figures, built from the metrics and the state."""

from __future__ import annotations

import time
from typing import Any

from ..config import Settings
from ..content.indexer import ContentIndexer
from ..metrics import Metrics, histogram_quantile, samples_by_name
from ..pipeline.feed import FeedPipeline
from ..rank.learned import ModelServer
from ..recall import RetrievalIndex
from ..state.online import OnlineState
from ..storage import Store


class Views:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        state: OnlineState,
        model: ModelServer,
        indexes: dict[str, RetrievalIndex],
        content: ContentIndexer,
        pipeline: FeedPipeline,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.state = state
        self.model = model
        self.indexes = indexes  # "retrieval" (two-tower), "sequence"
        self.content = content
        self.pipeline = pipeline
        self.metrics = metrics
        self.started_at = time.time()

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "store": self.store.url.split("://")[0],
            "videos": self.state.table.size,
            "users": len(self.state.users),
            "event_offset": self.state.offset,
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def mirror_trainer(self) -> None:
        """Mirror the trainer's latest published figures into the metrics."""
        status = self.model.trainer_status
        m = self.metrics
        for head, figures in status.get("heads", {}).items():
            if figures.get("auc") is not None:
                m.model_auc.labels(head).set(figures["auc"])
            if "logloss" in figures:
                m.model_logloss.labels(head).set(figures["logloss"])
            if figures.get("observed_rate"):
                m.model_calibration.labels(head).set(
                    figures["predicted_rate"] / figures["observed_rate"]
                )
        if status:
            m.train_examples.set(status.get("examples_trained", 0))
            m.train_rate.set(status.get("examples_per_s", 0.0))
            if status.get("lag_s") is not None:
                m.train_lag.set(status["lag_s"])
        if self.model.last_applied:
            m.model_sync_age.set(time.time() - self.model.last_applied)

    def model_status(self) -> dict[str, Any]:
        """The serving model and the trainer's latest published figures."""
        content, index = self.content, self.state.content
        return {
            "serving": {
                **self.model.status(),
                "trainer_mode": self.settings.trainer_mode(),
                "fusion_weights": self.settings.fusion_weights,
                "retrieval": self.indexes["retrieval"].status(),
                "sequence": self.indexes["sequence"].status(),
                "related": self.state.related.status(),
                "content": {
                    "embedder": content.embedder.name,
                    "dim": content.embedder.dim,
                    "videos": len(index),
                    "filled": content.filled.is_set(),
                    "waiting": content.waiting,
                    "restored": content.restored,
                    "embedded": content.embedded,
                    "approximate": index.approximate,
                    "ann_tuned": list(index.tuner.tuned) if index.tuner.tuned else None,
                },
            },
            "trainer": self.model.trainer_status or None,
        }

    def channel_figures(self) -> dict[str, dict[str, Any]]:
        """Per recall channel: candidates contributed, slots won, engaged slots and rate."""
        reg = self.metrics.registry
        out = {}
        for name in self.pipeline.channel_names:
            label = {"source": name}
            slots = int(reg.get_sample_value("reelrank_feed_items_total", label) or 0)
            engaged = int(reg.get_sample_value("reelrank_channel_engagements_total", label) or 0)
            out[name] = {
                "candidates": int(
                    reg.get_sample_value("reelrank_recall_candidates_total", label) or 0
                ),
                "failures": int(reg.get_sample_value("reelrank_recall_failures_total", label) or 0),
                "slots": slots,
                "engagements": engaged,
                "engagement_rate": engaged / slots if slots else None,
            }
        return out

    def overview(self) -> dict[str, Any]:
        """Cumulative counters, the feed latency histogram and the model's figures: what the
        dashboard polls (it derives rates and recent quantiles by differencing two polls)."""
        samples = samples_by_name(self.metrics.registry)

        def by(name: str, label: str) -> dict[str, int]:
            return {lab[label]: int(v) for lab, v in samples.get(name, []) if label in lab}

        buckets = [
            (float(lab["le"]), v)
            for lab, v in samples.get("reelrank_feed_latency_seconds_bucket", [])
        ]
        requests = by("reelrank_feed_requests_total", "cold")
        outcomes = by("reelrank_events_total", "outcome")
        model = self.model
        trainer = model.trainer_status or {}
        heads = trainer.get("heads", {})
        return {
            "ts": time.time(),
            "uptime_s": round(time.time() - self.started_at, 1),
            "videos": self.state.table.size,
            "users": len(self.state.users),
            "feed": {
                "requests": sum(requests.values()),
                "cold_start": requests.get("true", 0),
                "by_ranker": by("reelrank_ranker_requests_total", "ranker"),
                "ranker_fallbacks": sum(by("reelrank_ranker_fallbacks_total", "reason").values()),
                "latency": {
                    "count": int(buckets[-1][1]) if buckets else 0,
                    "sum_s": sum(
                        v for _, v in samples.get("reelrank_feed_latency_seconds_sum", [])
                    ),
                    "buckets": [["+Inf" if b == float("inf") else b, int(c)] for b, c in buckets],
                    "p50_s": histogram_quantile(buckets, 0.5),
                    "p99_s": histogram_quantile(buckets, 0.99),
                },
            },
            "events": {
                "accepted": outcomes.get("accepted", 0),
                "duplicates": outcomes.get("duplicate", 0),
                "rejected": outcomes.get("rejected", 0),
                "by_type": by("reelrank_events_accepted_by_type_total", "type"),
                "state_lag": self.state.lag(),
            },
            "impressions_logged": int(
                sum(v for _, v in samples.get("reelrank_impressions_logged_total", []))
            ),
            "model": {
                "version": model.version() if model.live is not None else None,
                "ready": model.ready(),
                "note": None if model.ready() else model.not_ready_note(),
                "champion": model.champion or None,
                "examples_trained": trainer.get("examples_trained", 0),
                "examples_per_s": trainer.get("examples_per_s"),
                "lag_s": trainer.get("lag_s"),
                "auc": {h: f["auc"] for h, f in heads.items() if f.get("auc") is not None},
            },
        }
