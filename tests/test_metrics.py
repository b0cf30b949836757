"""The engine's Prometheus metrics: labelled children are looked up once and count right."""

from __future__ import annotations

from reelrank.metrics import Metrics


def test_a_labelled_child_is_reused_and_counts_every_increment() -> None:
    m = Metrics()
    first = m.feed_items.labels("trending")
    assert m.feed_items.labels("trending") is first
    assert m.feed_items.labels(source="trending") is first  # keyword form, the same child
    for _ in range(3):
        m.feed_items.labels("trending").inc()
    m.feed_items.labels("fresh").inc(2)
    m.recall_seconds.labels("trending").observe(0.001)
    get = m.registry.get_sample_value
    assert get("reelrank_feed_items_total", {"source": "trending"}) == 3
    assert get("reelrank_feed_items_total", {"source": "fresh"}) == 2
    assert get("reelrank_recall_seconds_count", {"source": "trending"}) == 1


def test_a_removed_child_is_not_handed_out_again() -> None:
    m = Metrics()
    m.feed_items.labels("trending").inc(5)
    m.feed_items.remove("trending")
    m.feed_items.labels("trending").inc()
    assert m.registry.get_sample_value("reelrank_feed_items_total", {"source": "trending"}) == 1
    m.feed_items.clear()
    assert m.registry.get_sample_value("reelrank_feed_items_total", {"source": "trending"}) is None
    m.feed_items.labels("trending").inc(2)
    assert m.registry.get_sample_value("reelrank_feed_items_total", {"source": "trending"}) == 2
