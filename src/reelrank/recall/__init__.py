"""Candidate sources: each returns video rows with a reason, within its quota."""

from ..index.vectors import VectorIndex
from ..state.pools import PoolBook
from .base import HotLists, RecallSource, top_by
from .content import ContentRecall
from .explore import ExploreRecall
from .following import FollowingRecall
from .fresh import FreshRecall
from .interest import InterestRecall
from .item2item import ItemToItemRecall
from .pool import PoolRecall
from .popular import PopularRecall
from .related import RelatedRecall
from .session import SessionRecall
from .trending import TrendingRecall
from .two_tower import RetrievalIndex, SequenceRecall, TwoTowerRecall

__all__ = [
    "ContentRecall",
    "ExploreRecall",
    "FollowingRecall",
    "FreshRecall",
    "InterestRecall",
    "ItemToItemRecall",
    "PoolRecall",
    "PopularRecall",
    "RecallSource",
    "RelatedRecall",
    "RetrievalIndex",
    "SequenceRecall",
    "SessionRecall",
    "TrendingRecall",
    "TwoTowerRecall",
    "default_sources",
    "top_by",
]


def default_sources(
    trending_refresh_s: float,
    pools: PoolBook | None = None,
    retrieval: RetrievalIndex | None = None,
    sequence: RetrievalIndex | None = None,
    content: VectorIndex | None = None,
    background: bool = True,
) -> list[RecallSource]:
    """The embedded default channel list, in merge priority order. The pool, two-tower,
    sequence and content channels read the traffic pools and the video indexes they are
    given (without one, that channel recalls nothing). Without `background` the cached
    lists are recomputed by the request that finds them stale, never on a thread. The
    session and interest channels share their hottest-per-hashtag lists."""
    hot = HotLists(trending_refresh_s)
    return [
        FollowingRecall(),
        PoolRecall(pools),
        SessionRecall(trending_refresh_s, hot),
        ItemToItemRecall(),
        RelatedRecall(),
        SequenceRecall(sequence),
        TwoTowerRecall(retrieval),
        ContentRecall(content),
        InterestRecall(trending_refresh_s, hot),
        TrendingRecall(trending_refresh_s, background),
        PopularRecall(trending_refresh_s, background),
        FreshRecall(trending_refresh_s, background),
        ExploreRecall(),
    ]
