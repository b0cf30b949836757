"""Typed settings: environment `REELRANK_*` over a TOML config file over defaults.

Every key is a field of `Settings` with its default and a one-line doc; unknown keys are
errors. `settings_table()` renders the documented list that the README carries.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .grammar import parse_api_keys, parse_roles


def _doc(text: str, default: Any = dataclasses.MISSING, factory: Any = dataclasses.MISSING) -> Any:
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


@dataclass(frozen=True)
class Settings:
    """All of reelrank's settings with their defaults."""

    host: str = _doc("Address the HTTP server binds to.", "127.0.0.1")
    port: int = _doc("Port the HTTP server listens on.", 8000)
    data_dir: str = _doc("Directory for the embedded database and snapshots.", "./data")
    store: str = _doc(
        "Store URL: `sqlite:///path.db` or `memory://`; empty means "
        "`sqlite:///<data_dir>/reelrank.db`.",
        "",
    )
    sqlite_synchronous: str = _doc(
        "SQLite `synchronous` pragma for the embedded store: FULL (fsync on every commit, "
        "survives power loss) or NORMAL (survives a process crash).",
        "FULL",
    )
    api_keys: str = _doc(
        "API keys and their scopes, `key=scope,scope;key2=scope` with scopes ingest, feed, "
        "admin (admin grants all). Empty: ingest and admin calls are refused.",
        "",
    )
    feed_requires_key: bool = _doc(
        "Require a key with the `feed` scope for feed and catalog reads.", False
    )
    max_batch: int = _doc("Most items accepted in one POST (events, videos, users, follows).", 1000)
    max_in_flight: int = _doc(
        "Requests the server works on at once (all but /healthz and /metrics); one more is "
        "refused at once with 503 and a `Retry-After` header instead of waiting in a queue "
        "that grows without bound (0: no limit).",
        64,
    )
    feed_concurrency: int = _doc(
        "Feed pipelines computed at once; more requests wait their turn in arrival order "
        "(0: no limit). The pipeline runs under Python's interpreter lock, so side by side "
        "pipelines only take turns on it: one at a time served the most feeds per second.",
        1,
    )
    feed_default_n: int = _doc("Page size when a feed request gives no `n`.", 10)
    feed_max_n: int = _doc("Largest page size a feed request may ask for.", 100)
    banned_terms: list[str] = _doc(
        "Words that send a video to human review when its caption or hashtags contain them.",
        factory=list,
    )
    rejected_terms: list[str] = _doc(
        "Words that reject a video outright when its caption or hashtags contain them.",
        factory=list,
    )
    review_max_hashtags: int = _doc(
        "A video with more hashtags than this goes to human review (hashtag stuffing).", 20
    )
    review_max_duration_ms: int = _doc(
        "A video longer than this, in milliseconds, goes to human review.", 600_000
    )
    review_classifier: str = _doc(
        "Optional review model, `module:function`: called with each uploaded video, it "
        "returns the probability that the video breaks policy. Empty: none.",
        "",
    )
    review_classifier_hold: float = _doc(
        "Classifier probability at or above which a video goes to human review.", 0.5
    )
    review_classifier_reject: float = _doc(
        "Classifier probability at or above which a video is rejected.", 0.9
    )
    report_review_threshold: int = _doc(
        "Distinct users reporting an approved video that send it back to human review.", 3
    )
    duplicate_cosine: float = _doc(
        "Content similarity (caption and hashtag embeddings) at or above which a new video "
        "with a duration within `duplicate_duration_ms` of an older one is a re-upload; "
        "0 turns the embedding check off (media hash and caption checks stay).",
        0.97,
    )
    duplicate_duration_ms: int = _doc(
        "Largest duration difference, in milliseconds, between a video and its re-upload.", 1000
    )
    pool_sizes: list[int] = _doc(
        "Impressions of each traffic-pool tier, smallest first: a new video gets the first "
        "and climbs while its engagement passes the tier's threshold.",
        factory=lambda: [300, 3000, 30000],
    )
    pool_thresholds: list[float] = _doc(
        "Quality a video needs at the end of each tier to be promoted (one per tier): the "
        "weighted mean of its pool audience's smoothed rate lifts over the baseline (the "
        "catalog's rates, then those of the pools judged at the tier), less the skip "
        "lift's excess; 1.0 is the typical video at that tier.",
        factory=lambda: [1.0, 1.1, 1.2],
    )
    pool_weights: dict[str, float] = _doc(
        "Weights of the rates in a pool's quality: finish, like, share, comment, follow "
        "(positive lifts, averaged) and skip (penalty per unit of skip lift above 1).",
        factory=lambda: {
            "finish": 1.0,
            "like": 1.0,
            "share": 1.0,
            "comment": 0.5,
            "follow": 0.5,
            "skip": 0.5,
        },
    )
    pool_settle_s: float = _doc(
        "Seconds a pool waits after its last impression for the engagement to arrive "
        "before it is judged.",
        30.0,
    )
    pool_match_patience_s: float = _doc(
        "A user with known tastes is a first audience only for pool videos matching them; "
        "a pool video still testing its tier after this many seconds is shown to anyone.",
        300.0,
    )
    pool_max_age_h: float = _doc(
        "Only videos created within this many hours of their approval get a first pool "
        "(an imported back catalog does not); 0 means any age.",
        72.0,
    )
    pool_cool_heat: float = _doc(
        "A graduated video whose decayed heat (hotness) falls below this is cooled.", 1.0
    )
    pool_revive_heat: float = _doc(
        "Heat earned since a video was stopped or cooled that sends it back to testing.", 20.0
    )
    boost_budget: int = _doc(
        "Most boosted impressions outstanding at once across all videos (operator heating).",
        10_000,
    )
    strikes_to_suspend: int = _doc("Strikes at which a creator's videos stop being distributed.", 3)
    seen_max: int = _doc("Videos remembered per user as seen (never served again).", 5000)
    session_len: int = _doc(
        "Engagements kept per user as the short-term session (the sequence model reads the "
        "finishes, likes, shares, comments and follows among them).",
        50,
    )
    affinity_half_life_h: float = _doc("Half-life, in hours, of user interest affinities.", 48.0)
    hotness_half_life_h: float = _doc(
        "Half-life, in hours, of video hotness and decayed counters.", 24.0
    )
    smoothing_strength: float = _doc(
        "Pseudo-impressions of the catalog-wide rate mixed into each video's rates.", 20.0
    )
    score_weights: dict[str, float] = _doc(
        "Heuristic fusion weights: smoothed rates (finish, like, share, skip), the user's "
        "affinity for the video, its co-engagement with the user's latest engaged videos, "
        "its related-videos score (1 for the user's best video), and its hotness.",
        factory=lambda: {
            "finish": 1.0,
            "like": 2.0,
            "share": 3.0,
            "skip": -1.0,
            "affinity": 1.5,
            "coengaged": 2.0,
            "related": 2.0,
            "hotness": 0.3,
        },
    )
    recall_quotas: dict[str, int] = _doc(
        "Most candidates each recall channel contributes per request.",
        factory=lambda: {
            "following": 100,
            "pool": 20,
            "session": 100,
            "item2item": 150,
            "related": 150,
            "sequence": 200,
            "two_tower": 200,
            "content": 150,
            "interest": 300,
            "trending": 200,
            "popular": 200,
            "fresh": 100,
            "explore": 60,
        },
    )
    recall_budget_ms: float = _doc(
        "Time budget of the recall stage per request, in milliseconds (0: none). Channels "
        "run in priority order; those not started when it is spent are left out of that page "
        "and counted in `reelrank_recall_timeouts_total`. The precomputed lists (trending, "
        "popular, fresh) run whatever the budget, so a spent budget never empties a page.",
        20.0,
    )
    recall_parallel: bool = _doc(
        "Run the recall channels side by side on a thread pool, leaving out any still running "
        "when the budget ends. Slower for in-process channels (they hold the GIL); meant for "
        "channels that wait on I/O.",
        False,
    )
    content_embedder: str = _doc(
        "Caption and hashtag embeddings: `minilm` (all-MiniLM-L6-v2 from the optional extra "
        "`reelrank[content]`), `hashed` (feature-hashed words and trigrams, no model), or "
        "`auto` (MiniLM when installed, else hashed).",
        "auto",
    )
    content_dim: int = _doc("Dimensions of the hashed content embedding.", 128)
    two_tower_dim: int = _doc("Size of the two-tower retrieval model's vector space.", 32)
    two_tower_refresh_s: float = _doc(
        "Least seconds between recomputations of every video's two-tower vector with the "
        "newest weights; a recomputation also waits ten times as long as the last one took, "
        "so it uses at most a tenth of a core (new and edited videos are placed at once).",
        30.0,
    )
    ann_min_vectors: int = _doc(
        "Vectors an index holds before approximate (faiss IVF) search replaces exact search.",
        10_000,
    )
    ann_nprobe: int = _doc(
        "Most inverted lists the approximate index scans per query (recall against speed); "
        "an index of n vectors has about 4 sqrt(n) lists.",
        128,
    )
    ann_recall: float = _doc(
        "Recall@100 against exact search the approximate index keeps: each build measures "
        "its latest queries (its own vectors before any came) at `ann_nprobe` lists, half, "
        "a quarter ... a sixteenth, and scans the fewest that reach it (`ann_nprobe` when "
        "none below does). 0 scans `ann_nprobe` always.",
        0.98,
    )
    coengagement_window_s: float = _doc(
        "Two engagements by one user this close in time (seconds) count as co-engagement.",
        3600.0,
    )
    coengagement_max_neighbours: int = _doc(
        "Co-engaged neighbours kept per video (bounds the item-to-item graph).", 100
    )
    related_max_videos: int = _doc(
        "Videos the related-videos model (EASE, a linear item-to-item model over every "
        "user's recent engagements) covers: those most users engaged with. Its fit solves a "
        "dense system of this size squared (about a second at 3,000); 0 turns it off.",
        3000,
    )
    related_l2: float = _doc(
        "L2 regularisation of the related-videos model (EASE's lambda).", 500.0
    )
    related_window: int = _doc(
        "Latest engagements the related-videos model fits on (8 bytes each); it is fitted "
        "again, off the request path, whenever the window grew by a fifth since the last fit.",
        2_000_000,
    )
    diversity_lambda: float = _doc(
        "Diversity weight: each pick maximises normalised score minus this times its "
        "similarity (same creator, hashtag overlap, content-embedding cosine) to the last "
        "picks; 0 turns it off.",
        0.3,
    )
    diversity_window: int = _doc("Recent picks a candidate is compared with.", 3)
    fatigue_creator_per_day: int = _doc(
        "Most videos of one creator served to a user per UTC day.", 20
    )
    fatigue_tag_per_day: int = _doc("Most videos of one hashtag served to a user per UTC day.", 60)
    fatigue_strict: bool = _doc(
        "Hold the daily fatigue caps even when they leave a page short or empty. By default, "
        "once the caps leave no candidate for a position, the rest of that page is chosen "
        "without them: a repeat creator or hashtag beats an empty feed.",
        False,
    )
    exploration_fraction: float = _doc(
        "Share of each page given to exploration slots: videos owed traffic-pool or boost "
        "impressions first, else new and out-of-profile videos.",
        0.1,
    )
    exploration_positions: list[int] = _doc(
        "Page positions (0-based) of the exploration slots, used in this order; a position "
        "past the end of a shorter page means its last place. The default, the last place of "
        "every ten, bounds what exploration costs the ranked top ten to its tenth place.",
        factory=lambda: [9, 19, 29],
    )
    experiments: list[dict[str, Any]] = _doc(
        "A/B experiments, as TOML `[[experiments]]` tables or a JSON list: `id`, `layer` "
        '(default "default"), `traffic` (share of the layer\'s users, default 1), `offset`, '
        "`description` and at least two `arms` (`name`, `weight`, `overrides` of "
        "`fusion_weights`, `score_weights`, `recall_quotas`, `exploration_fraction`, "
        "`ranker`); the first arm is the control. See the README's Experiments section.",
        factory=list,
    )
    trending_refresh_s: float = _doc("Seconds between recomputations of trending lists.", 2.0)
    snapshot_interval_s: float = _doc(
        "Seconds between snapshots of the online state (restart replays the log after it).", 60.0
    )
    impression_flush_s: float = _doc(
        "Seconds between flushes of server-side impression records to the store.", 0.2
    )
    max_future_skew_s: float = _doc(
        "How far, in seconds, an event's `ts` may lie ahead of the server clock.", 86400.0
    )
    log_level: str = _doc("Log level: debug, info, warning or error.", "info")

    # -- real-time learning ----------------------------------------------------------------
    trainer: str = _doc(
        "Where the online trainer runs: `process` (a child of `serve`), `thread` (inside the "
        "server; the only choice for a memory store), or `off` (run `reelrank train` "
        "elsewhere, or serve the heuristic ranker only).",
        "process",
    )
    roles: str = _doc(
        "The roles `serve` plays, comma-separated, or `all`: `api` (HTTP: writes, feeds, "
        "reads; follows the catalog's changes and the published parameters), `worker` (folds "
        "the event log into the online state and snapshots it), `lifecycle` (review queue, "
        "traffic pools), `trainer` (joins, trains, publishes; where `trainer` says). Over "
        "`sqlite://` and `memory://` the online state lives in the serving process, so `api`, "
        "`worker` and `lifecycle` run together; `trainer` alone is `reelrank train`.",
        "all",
    )
    params_url: str = _doc(
        "Parameter channel URL; empty means `sqlite:///<data_dir>/params.db` (or `memory://` "
        "with a memory store).",
        "",
    )
    join_window_s: float = _doc(
        "Event-time window in which actions join the impression that caused them.", 30.0
    )
    join_require_view: bool = _doc(
        "Drop served impressions the client never reported viewing (no event at all).", True
    )
    correction_window_s: float = _doc(
        "How long after its window closes an impression still takes late actions (as corrections).",
        3600.0,
    )
    train_batch: int = _doc("Examples per training mini-batch.", 256)
    train_max_wait_s: float = _doc(
        "Train a partial batch when its oldest example has waited this long.", 0.5
    )
    sync_interval_s: float = _doc(
        "Seconds between publications of the embedding rows the trainer touched.", 2.0
    )
    dense_sync_interval_s: float = _doc(
        "Seconds between publications of the dense network weights.", 20.0
    )
    checkpoint_interval_s: float = _doc(
        "Seconds between trainer checkpoints (model, optimisers, joiner, log offsets).", 60.0
    )
    model_poll_s: float = _doc("Seconds between serving's checks for new parameters.", 0.5)
    model_min_examples: int = _doc(
        "Examples the trainer must have learned from before the learned ranker serves; "
        "until then the heuristic scorer does, and responses say so.",
        2000,
    )
    learned_ranker: str = _doc(
        "When the trained ranker serves: `champion` (only while it orders recent pages "
        "better than the heuristic scorer, compared on every training batch before it is "
        "learned) or `always` (as soon as it has learned from `model_min_examples`).",
        "champion",
    )
    champion_min_pairs: int = _doc(
        "Page pairs (two impressions of one page whose outcomes differ) compared before the "
        "learned ranker may take over from the heuristic.",
        2000,
    )
    champion_window: int = _doc(
        "The most recent page pairs the champion/challenger comparison is made on; also "
        "the memory, in viewed impressions of all traffic, of what served pages earned "
        "(an impression counts exp(-age / window) as evidence).",
        20_000,
    )
    champion_holdout: float = _doc(
        "Share of pages served by the ranker that is not the champion once the learned "
        "ranker is trained (chosen by a hash of the request id), so live traffic keeps "
        "measuring both: the comparison of the value pages served by each earn decides the "
        "champion once both have `champion_min_impressions` (pages split half and half "
        "until it settles); 0 turns it off.",
        0.05,
    )
    champion_min_impressions: int = _doc(
        "Viewed impressions (as evidence, faded with age) each ranker's pages need before "
        "the value they earn, rather than the ordering of pairs, decides the champion.",
        500,
    )
    champion_margin: float = _doc(
        "Share of correctly ordered pairs by which the learned ranker must beat the "
        "heuristic to serve.",
        0.0,
    )
    trainer_nice: int = _doc(
        "Niceness added to the trainer process, so serving wins the CPU when both want it.",
        10,
    )
    rebuild_nice: int = _doc(
        "Niceness added to the serving process's rebuild threads (the two-tower and sequence "
        "indexes, the related-videos fit) where threads have their own (Linux), so requests "
        "win the CPU over them; 0 leaves them at the process's.",
        10,
    )
    ranker_arch: str = _doc("Ranker network: `shared_bottom` or `mmoe`.", "shared_bottom")
    embedding_dim: int = _doc("Embedding size per sparse feature slot.", 16)
    embedding_capacity: int = _doc("Most rows per embedding table (bounds memory).", 2_000_000)
    embedding_min_count: int = _doc(
        "Sightings before an id gets its own embedding row (until then it shares a default "
        "row); request-context slots admit at once.",
        2,
    )
    embedding_expire_h: float = _doc(
        "Hours (event time) after which an embedding row nobody updated is freed for reuse.",
        168.0,
    )
    dense_lr: float = _doc("Adam learning rate of the dense weights.", 2e-3)
    sparse_lr: float = _doc("Row-wise Adagrad learning rate of the embedding rows.", 0.05)
    prerank_keep: int = _doc(
        "Candidates the cheap pre-ranker keeps for the learned ranker to score.", 300
    )
    fusion_weights: dict[str, float] = _doc(
        "Learned-ranker fusion: score = sum of weight x P(action) over the heads, plus "
        "`watch_time` x the expected watch time as a share of the catalog's mean duration "
        "(P(watch ratio) x duration / mean), so long videos watched well are valued over "
        "short ones finished.",
        factory=lambda: {
            "finish": 1.0,
            "long_view": 0.5,
            "like": 2.0,
            "share": 3.0,
            "comment": 1.5,
            "follow": 3.0,
            "skip": -1.0,
            "negative": -5.0,
            "watch_ratio": 0.0,
            "watch_time": 1.0,
        },
    )

    def store_url(self) -> str:
        """The effective store URL."""
        if self.store:
            return self.store
        return f"sqlite:///{Path(self.data_dir) / 'reelrank.db'}"

    def params_channel_url(self) -> str:
        """The effective parameter channel URL."""
        if self.params_url:
            return self.params_url
        if self.store_url().startswith("memory://"):
            return "memory://"
        return f"sqlite:///{Path(self.data_dir) / 'params.db'}"

    def role_set(self) -> frozenset[str]:
        """`roles` as a set, or ConfigError naming what is wrong."""
        return parse_roles(self.roles, self.store_url())

    def trainer_mode(self) -> str:
        """`trainer`, except that a memory store can only train in-process, and a process
        without the trainer role trains nowhere."""
        if "trainer" not in self.role_set():
            return "off"
        if self.trainer == "process" and self.store_url().startswith("memory://"):
            return "thread"
        return self.trainer

    def key_scopes(self) -> dict[str, frozenset[str]]:
        """Parse `api_keys` into key -> scopes."""
        return parse_api_keys(self.api_keys)

    def experiment_book(self, started_at: float = 0.0) -> Any:
        """The `experiments` setting as an ExperimentBook, or ConfigError naming the fault."""
        from .errors import Conflict, InvalidInput
        from .experiments.registry import ExperimentBook, parse_spec

        specs = []
        for i, raw in enumerate(self.experiments):
            try:
                specs.append(parse_spec(raw))
            except InvalidInput as exc:
                raise ConfigError(f"setting experiments[{i}]: {exc}") from None
        try:
            return ExperimentBook(experiment_knobs(self), specs, started_at)
        except (InvalidInput, Conflict) as exc:
            raise ConfigError(f"setting experiments: {exc}") from None


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(name: str, value: Any, from_env: bool, below: Any = None) -> Any:
    """Convert a raw value to the field's type, or raise ConfigError naming the key."""
    typ = _FIELDS[name].type
    try:
        if typ == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError("expected true or false")
        if typ == "int":
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            return int(value)
        if typ == "float":
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if typ == "str":
            if not isinstance(value, str):
                raise ValueError("expected a string")
            return value
        if typ == "list[int]":
            if from_env and isinstance(value, str):
                value = json.loads(value) if value.startswith("[") else value.split(",")
            if not isinstance(value, list):
                raise ValueError("expected a list of integers")
            if any(isinstance(v, bool | float) for v in value):
                raise ValueError("expected a list of integers")
            return [int(v) for v in value if str(v).strip()]
        if typ == "list[float]":
            if from_env and isinstance(value, str):
                value = json.loads(value) if value.startswith("[") else value.split(",")
            if not isinstance(value, list) or any(isinstance(v, bool) for v in value):
                raise ValueError("expected a list of numbers")
            out = [float(v) for v in value if str(v).strip()]
            if not all(math.isfinite(v) for v in out):
                raise ValueError("expected finite numbers")
            return out
        if typ == "list[str]":
            if from_env and isinstance(value, str):
                value = json.loads(value) if value.startswith("[") else value.split(",")
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError("expected a list of strings")
            return [v.strip() for v in value if v.strip()]
        if typ == "list[dict[str, Any]]":
            if from_env and isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
                raise ValueError("expected a list of tables")
            return [dict(v) for v in value]
        if typ.startswith("dict[str, "):
            if from_env and isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, Mapping):
                raise ValueError("expected a table of name = number")
            cast = int if typ.endswith("int]") else float
            factory: Any = _FIELDS[name].default_factory
            default = factory()
            unknown = set(value) - set(default)
            if unknown:
                raise ValueError(f"unknown names {sorted(unknown)}; known: {sorted(default)}")
            merged = dict(below if below is not None else default)
            merged.update({k: cast(v) for k, v in value.items()})
            return merged
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"setting {name}: {exc} (got {value!r})") from None
    raise ConfigError(f"setting {name}: unsupported type {typ}")  # pragma: no cover


def _validate(s: Settings) -> None:
    checks = [
        (s.port >= 0 and s.port < 65536, "port", "must be 0..65535"),
        (s.max_batch >= 1, "max_batch", "must be at least 1"),
        (s.max_in_flight >= 0, "max_in_flight", "must not be negative"),
        (s.feed_concurrency >= 0, "feed_concurrency", "must not be negative"),
        (1 <= s.feed_default_n <= s.feed_max_n, "feed_default_n", "must be 1..feed_max_n"),
        (s.seen_max >= 1, "seen_max", "must be at least 1"),
        (s.session_len >= 1, "session_len", "must be at least 1"),
        (s.affinity_half_life_h > 0, "affinity_half_life_h", "must be positive"),
        (s.hotness_half_life_h > 0, "hotness_half_life_h", "must be positive"),
        (s.smoothing_strength >= 0, "smoothing_strength", "must not be negative"),
        (s.review_max_hashtags >= 0, "review_max_hashtags", "must not be negative"),
        (s.review_max_duration_ms > 0, "review_max_duration_ms", "must be positive"),
        (
            0 <= s.review_classifier_hold <= s.review_classifier_reject <= 1,
            "review_classifier_hold",
            "must satisfy 0 <= review_classifier_hold <= review_classifier_reject <= 1",
        ),
        (s.report_review_threshold >= 1, "report_review_threshold", "must be at least 1"),
        (0 <= s.duplicate_cosine <= 1, "duplicate_cosine", "must be 0..1"),
        (s.duplicate_duration_ms >= 0, "duplicate_duration_ms", "must not be negative"),
        (
            len(s.pool_sizes) >= 1 and all(x >= 1 for x in s.pool_sizes),
            "pool_sizes",
            "must list at least one tier, each of at least 1 impression",
        ),
        (
            len(s.pool_thresholds) == len(s.pool_sizes),
            "pool_thresholds",
            "must have one threshold per pool_sizes tier",
        ),
        (
            set(s.pool_weights) <= {"finish", "like", "share", "comment", "follow", "skip"}
            and all(w >= 0 for w in s.pool_weights.values()),
            "pool_weights",
            "keys are finish, like, share, comment, follow, skip; weights not negative",
        ),
        (s.pool_settle_s >= 0, "pool_settle_s", "must not be negative"),
        (s.pool_match_patience_s >= 0, "pool_match_patience_s", "must not be negative"),
        (s.pool_max_age_h >= 0, "pool_max_age_h", "must not be negative"),
        (s.boost_budget >= 0, "boost_budget", "must not be negative"),
        (s.strikes_to_suspend >= 1, "strikes_to_suspend", "must be at least 1"),
        (s.trending_refresh_s > 0, "trending_refresh_s", "must be positive"),
        (s.coengagement_window_s > 0, "coengagement_window_s", "must be positive"),
        (s.diversity_lambda >= 0, "diversity_lambda", "must not be negative"),
        (s.recall_budget_ms >= 0, "recall_budget_ms", "must not be negative"),
        _one_of(s.content_embedder, "content_embedder", ("auto", "minilm", "hashed")),
        (s.content_dim >= 8, "content_dim", "must be at least 8"),
        (s.ann_min_vectors >= 1, "ann_min_vectors", "must be at least 1"),
        (s.ann_nprobe >= 1, "ann_nprobe", "must be at least 1"),
        (0.0 <= s.ann_recall <= 1.0, "ann_recall", "must be between 0 and 1"),
        (s.two_tower_dim >= 2, "two_tower_dim", "must be at least 2"),
        (s.two_tower_refresh_s > 0, "two_tower_refresh_s", "must be positive"),
        (s.diversity_window >= 1, "diversity_window", "must be at least 1"),
        (s.fatigue_creator_per_day >= 1, "fatigue_creator_per_day", "must be at least 1"),
        (s.fatigue_tag_per_day >= 1, "fatigue_tag_per_day", "must be at least 1"),
        (0 <= s.exploration_fraction <= 1, "exploration_fraction", "must be 0..1"),
        (all(p >= 0 for p in s.exploration_positions), "exploration_positions", "must be >= 0"),
        (s.coengagement_max_neighbours >= 1, "coengagement_max_neighbours", "must be >= 1"),
        (s.related_max_videos >= 0, "related_max_videos", "must not be negative"),
        (s.related_l2 > 0, "related_l2", "must be positive"),
        (s.related_window >= 1, "related_window", "must be at least 1"),
        (s.snapshot_interval_s > 0, "snapshot_interval_s", "must be positive"),
        (s.impression_flush_s > 0, "impression_flush_s", "must be positive"),
        _one_of(s.sqlite_synchronous.upper(), "sqlite_synchronous", ("FULL", "NORMAL", "EXTRA")),
        _one_of(s.log_level.lower(), "log_level", ("debug", "info", "warning", "error")),
        (all(v >= 0 for v in s.recall_quotas.values()), "recall_quotas", "must not be negative"),
        _one_of(s.trainer, "trainer", ("process", "thread", "off")),
        _one_of(s.ranker_arch, "ranker_arch", ("shared_bottom", "mmoe")),
        (s.join_window_s > 0, "join_window_s", "must be positive"),
        (s.correction_window_s >= 0, "correction_window_s", "must not be negative"),
        (s.train_batch >= 1, "train_batch", "must be at least 1"),
        (s.train_max_wait_s > 0, "train_max_wait_s", "must be positive"),
        (s.sync_interval_s > 0, "sync_interval_s", "must be positive"),
        (s.dense_sync_interval_s > 0, "dense_sync_interval_s", "must be positive"),
        (s.checkpoint_interval_s > 0, "checkpoint_interval_s", "must be positive"),
        (s.model_poll_s > 0, "model_poll_s", "must be positive"),
        (0 <= s.trainer_nice <= 19, "trainer_nice", "must be 0..19"),
        (0 <= s.rebuild_nice <= 19, "rebuild_nice", "must be 0..19"),
        (s.model_min_examples >= 0, "model_min_examples", "must not be negative"),
        _one_of(s.learned_ranker, "learned_ranker", ("champion", "always")),
        (s.champion_min_pairs >= 0, "champion_min_pairs", "must not be negative"),
        (s.champion_window >= 1, "champion_window", "must be at least 1"),
        (0 <= s.champion_holdout < 0.5, "champion_holdout", "must be 0 or more, below 0.5"),
        (s.champion_min_impressions >= 1, "champion_min_impressions", "must be at least 1"),
        (
            math.isfinite(s.champion_margin) and -1 < s.champion_margin < 1,
            "champion_margin",
            "must be between -1 and 1",
        ),
        (s.embedding_dim >= 1, "embedding_dim", "must be at least 1"),
        (s.embedding_capacity >= 2, "embedding_capacity", "must be at least 2"),
        (s.embedding_min_count >= 1, "embedding_min_count", "must be at least 1"),
        (s.embedding_expire_h > 0, "embedding_expire_h", "must be positive"),
        (s.dense_lr > 0 and s.sparse_lr > 0, "dense_lr", "learning rates must be positive"),
        (s.prerank_keep >= 1, "prerank_keep", "must be at least 1"),
        (
            all(math.isfinite(v) for v in s.fusion_weights.values()),
            "fusion_weights",
            "must be finite numbers",
        ),
        (
            all(math.isfinite(v) for v in s.score_weights.values()),
            "score_weights",
            "must be finite numbers",
        ),
        (
            math.isfinite(s.max_future_skew_s) and s.max_future_skew_s >= 0,
            "max_future_skew_s",
            "must be a finite number, at least 0",
        ),
    ]
    for ok, name, why in checks:
        if not ok:
            raise ConfigError(f"setting {name}: {why} (got {getattr(s, name)!r})")
    s.key_scopes()
    s.role_set()
    s.experiment_book()


def _one_of(value: str, name: str, allowed: tuple[str, ...]) -> tuple[bool, str, str]:
    """A row of `_validate`'s checks: `value` is one of `allowed`."""
    return value in allowed, name, f"must be {', '.join(allowed[:-1])} or {allowed[-1]}"


def experiment_knobs(s: Settings) -> dict[str, list[str]]:
    """What an experiment arm may override: the names each override may set."""
    return {
        "fusion_weights": sorted(s.fusion_weights),
        "score_weights": sorted(s.score_weights),
        "recall_quotas": sorted(s.recall_quotas),
    }


def load_settings(
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings: explicit overrides > environment > config file > defaults."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    config_file = config_file or env.get("REELRANK_CONFIG")
    if config_file:
        path = Path(config_file)
        try:
            raw = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        for key, value in raw.items():
            if key not in _FIELDS:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, value, from_env=False)
    for var, value in env.items():
        if not var.startswith("REELRANK_") or var == "REELRANK_CONFIG":
            continue
        key = var[len("REELRANK_") :].lower()
        if key not in _FIELDS:
            raise ConfigError(f"environment {var}: unknown setting {key!r}")
        values[key] = _coerce(key, value, from_env=True, below=values.get(key))
    for key, value in overrides.items():
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting {key!r}")
        if value is not None:
            values[key] = _coerce(key, value, from_env=False, below=values.get(key))
    settings = Settings(**values)
    _validate(settings)
    return settings


def settings_table() -> str:
    """Markdown table of every setting, its environment variable, default and meaning."""
    rows = ["| setting | environment | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(Settings):
        factory: Any = f.default_factory
        default = f.default if f.default is not dataclasses.MISSING else factory()
        shown = json.dumps(default) if not isinstance(default, str) else f'"{default}"'
        rows.append(
            f"| `{f.name}` | `REELRANK_{f.name.upper()}` | `{shown}` | {f.metadata['doc']} |"
        )
    return "\n".join(rows)
