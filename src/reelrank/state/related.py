"""Related videos: a linear item-to-item model over everyone's engagement history.

Co-engagement (`coengagement.py`) sees pairs of engagements within an hour of each other;
this model sees every user's whole recent history at once. It is EASE (Steck,
"Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019): with X the binary
user x video matrix of engagements, the item weights are

    B = I - P / diag(P),   P = (X'X + l2 I)^-1,   diag(B) = 0,

the ridge regression of each video's column on all the others, and a user's score for
video j is the sum of B[i, j] over the videos i they engaged with. On next-item and
top-N tasks this closed form is among the strongest models known, and it has one
setting.

Engagements arrive one at a time into a window of the latest `window` (user, video)
pairs (older ones fall out, so the model follows what the app's users do now). The
model covers the `max_videos` videos most users engaged with in that window and is
refitted off the request path when the window has grown by `growth` of what the last fit
saw (a Cholesky inverse of max_videos^2 values: about half a second at 3,000). Serving
reads the last fitted model; a fit never blocks a reader.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import sparse

MIN_ENGAGEMENTS = 200  # the first fit waits for this many engagements
MIN_USERS = 2  # a video engaged with by fewer users in the window is not modelled


@dataclass(frozen=True)
class Fitted:
    """One fit: `rows[c]` is the video row of column c, `col_of[row]` its column (-1 for
    rows the fit does not cover), `weights` the (c, c) item weights B."""

    rows: np.ndarray
    col_of: np.ndarray
    weights: np.ndarray
    engagements: int  # engagements added when the fit's window was taken
    seconds: float

    def columns(self, rows: np.ndarray) -> np.ndarray:
        """Each row's column, -1 where the fit does not cover it."""
        out = np.full(len(rows), -1, dtype=np.int64)
        ok = (rows >= 0) & (rows < len(self.col_of))
        out[ok] = self.col_of[rows[ok]]
        return out

    def scores(self, seeds: np.ndarray) -> np.ndarray:
        """(c,) scores of every column for a user who engaged with the `seeds` rows,
        divided by the best score (1 for the top video; all zero when nothing is known)."""
        cols = self.columns(seeds)
        cols = np.unique(cols[cols >= 0])
        if len(cols) == 0:
            return np.zeros(len(self.rows), dtype=np.float32)
        s = self.weights[cols].sum(axis=0)
        top = float(s.max())
        return s / top if top > 0 else np.zeros_like(s)


class RelatedItems:
    """The engagement window and the last fitted model. `add` runs under the state's
    writer lock; `refit` from one background job at a time; readers read `fitted`."""

    def __init__(
        self,
        max_videos: int = 3000,
        l2: float = 500.0,
        window: int = 2_000_000,
        growth: float = 0.2,
    ) -> None:
        self.max_videos = max_videos
        self.l2 = l2
        self.window = window
        self.growth = growth
        self.user_index: dict[str, int] = {}
        self.user_ids: list[str] = []
        self._users = np.zeros(min(window, 1024), dtype=np.int32)
        self._rows = np.zeros(min(window, 1024), dtype=np.int32)
        self.added = 0  # engagements ever added; slot added % window holds the next
        self._lock = threading.Lock()  # guards the window against a fit copying it
        self._fitting = threading.Lock()
        self.fitted: Fitted | None = None
        self._next_fit_at = 0.0  # monotonic time before which a throttled refit waits

    def add(self, user_id: str, row: int) -> None:
        """One engagement of `user_id` with video `row`."""
        u = self.user_index.get(user_id)
        if u is None:
            u = self.user_index[user_id] = len(self.user_ids)
            self.user_ids.append(user_id)
        with self._lock:
            slot = self.added % self.window
            if slot >= len(self._users):
                grown = min(self.window, 2 * len(self._users))
                self._users = np.resize(self._users, grown)
                self._rows = np.resize(self._rows, grown)
            self._users[slot] = u
            self._rows[slot] = row
            self.added += 1

    def _fitted_on(self) -> int:
        """Engagements added when the last fit's window was taken (0 before a fit)."""
        return self.fitted.engagements if self.fitted is not None else 0

    def due(self) -> bool:
        """Enough new engagements since the last fit to fit again."""
        seen = self._fitted_on()
        return self.added >= MIN_ENGAGEMENTS and self.added - seen >= max(
            MIN_ENGAGEMENTS, self.growth * min(seen, self.window)
        )

    def refit(self, force: bool = False, throttle: bool = True) -> bool:
        """Fit again when due (or `force`d and anything is new). With `throttle`, a fit
        also waits ten times as long as the last one took, so fitting uses at most a tenth
        of a core. True when a new model was published."""
        if throttle and time.monotonic() < self._next_fit_at:
            return False
        if not (self.due() or (force and self.added > self._fitted_on())):
            return False
        if not self._fitting.acquire(blocking=False):
            return False
        try:
            started = time.perf_counter()
            with self._lock:
                n = min(self.added, self.window)
                users, rows, added = self._users[:n].copy(), self._rows[:n].copy(), self.added
            fitted = fit(users, rows, self.max_videos, self.l2, added)
            took = time.perf_counter() - started
            if fitted is not None:
                self.fitted = dataclasses.replace(fitted, seconds=round(took, 3))
            self._next_fit_at = time.monotonic() + 10.0 * took
            return fitted is not None
        finally:
            self._fitting.release()

    def status(self) -> dict[str, Any]:
        f = self.fitted
        return {
            "engagements": self.added,
            "videos": 0 if f is None else len(f.rows),
            "fitted_on": self._fitted_on(),
            "fit_s": 0.0 if f is None else f.seconds,
        }

    # -- snapshots -----------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The window, oldest engagement first."""
        with self._lock:
            n = min(self.added, self.window)
            shift = self.added % self.window if self.added > self.window else 0
            return {
                "related_users": np.roll(self._users[:n], -shift),
                "related_rows": np.roll(self._rows[:n], -shift),
            }

    def load(self, arrays: dict[str, np.ndarray], user_ids: list[str]) -> None:
        """Restore a snapshot's window (`to_arrays`, with `user_ids` in index order)."""
        if "related_users" not in arrays:
            return
        users = arrays["related_users"].astype(np.int32)[-self.window :]
        rows = arrays["related_rows"].astype(np.int32)[-self.window :]
        with self._lock:
            self.user_ids = list(user_ids)
            self.user_index = {u: i for i, u in enumerate(self.user_ids)}
            size = max(len(users), min(self.window, 1024))
            self._users = np.zeros(size, dtype=np.int32)
            self._rows = np.zeros(size, dtype=np.int32)
            self._users[: len(users)] = users
            self._rows[: len(rows)] = rows
            self.added = len(users)
            self.fitted = None


def fit(
    users: np.ndarray, rows: np.ndarray, max_videos: int, l2: float, engagements: int
) -> Fitted | None:
    """EASE over the `max_videos` videos with the most distinct users in the window."""
    if len(users) == 0:
        return None
    pairs = _distinct((users.astype(np.int64) << 32) | rows.astype(np.int64))
    u = pairs >> 32  # ascending, as the pairs are
    r = pairs & 0xFFFFFFFF
    counts = np.bincount(r)
    top = np.argsort(-counts, kind="stable")[:max_videos]
    top = np.sort(top[counts[top] >= MIN_USERS])
    if len(top) < 2:
        return None
    col_of = np.full(len(counts), -1, dtype=np.int64)
    col_of[top] = np.arange(len(top))
    keep = col_of[r] >= 0
    uu, cc = u[keep], col_of[r[keep]]
    uu = np.cumsum(np.concatenate([[0], uu[1:] != uu[:-1]]))  # users renumbered 0, 1, ...
    x = sparse.csr_matrix(
        (np.ones(len(cc), dtype=np.float64), (uu, cc)), shape=(int(uu.max()) + 1, len(top))
    )
    gram = (x.T @ x).toarray()
    gram[np.diag_indices_from(gram)] += l2
    try:
        b = _inverse_spd(gram)
    except np.linalg.LinAlgError:  # not positive definite in floating point: rebuild it
        gram = (x.T @ x).toarray()
        gram[np.diag_indices_from(gram)] += l2
        b = np.linalg.inv(gram)
    del gram  # in place from here: one dense matrix of max_videos^2 at a time, not three
    b /= -np.diag(b).copy()[None, :]
    np.fill_diagonal(b, 0.0)
    # Row-major: a request gathers the rows of its seeds, which in LAPACK's column-major
    # result are strided (10 rows of 3,000 x 3,000: 78 ms by np.take, 0.01 ms row-major).
    weights = np.ascontiguousarray(b, dtype=np.float32)
    return Fitted(top.astype(np.int64), col_of, weights, engagements, 0.0)


def _distinct(x: np.ndarray) -> np.ndarray:
    """The distinct values of `x`, ascending (np.unique's answer, by a sort: np.unique
    holds the interpreter lock for most of its time, and requests wait on a fit)."""
    x = np.sort(x)
    return x[np.concatenate([[True], x[1:] != x[:-1]])] if len(x) else x


def _inverse_spd(a: np.ndarray) -> np.ndarray:
    """The inverse of a symmetric positive definite matrix, computed in `a`'s memory:
    Cholesky and its inverse (half the work of a general inverse), by torch, which lets
    other threads run meanwhile (scipy's LAPACK wrappers hold the interpreter lock for the
    whole factorisation: seconds in which no request is served). LinAlgError when the
    matrix is not positive definite (`a` is then overwritten)."""
    t = torch.from_numpy(a)  # the same memory
    info = torch.zeros((), dtype=torch.int32)
    torch.linalg.cholesky_ex(t, out=(t, info))
    if int(info) != 0:
        raise np.linalg.LinAlgError(f"not positive definite (minor of order {int(info)})")
    torch.cholesky_inverse(t, out=t)
    return a
