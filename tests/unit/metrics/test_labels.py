"""pipeline.labels: bounded account labels (configured + top N by volume + "other")."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.metrics.labels import OTHER, AccountLabels


def test_configured_accounts_are_always_labeled() -> None:
    labels = AccountLabels(["acme", "beta"], top_n=2)
    assert labels.label("acme") == "acme"
    labels.observe({"acme": 1_000_000, "zed": 1})
    labels.refresh()
    assert labels.label("acme") == "acme" and labels.label("beta") == "beta"
    assert "acme" not in labels.counts  # configured accounts take no summary slot


def test_unknown_accounts_are_other_until_a_refresh() -> None:
    labels = AccountLabels([], top_n=2)
    labels.observe({"a": 10, "b": 5, "c": 1})
    assert labels.label("a") == OTHER  # the labeled set changes only on refresh
    assert labels.refresh() == []
    assert (labels.label("a"), labels.label("b"), labels.label("c")) == ("a", "b", OTHER)
    assert labels.label("never-seen") == OTHER


def test_top_n_by_volume_accumulates_over_observations() -> None:
    labels = AccountLabels([], top_n=1)
    labels.observe({"a": 3, "b": 2})
    labels.observe({"b": 2})
    labels.refresh()
    assert labels.label("b") == "b" and labels.label("a") == OTHER


def test_refresh_returns_accounts_that_lost_their_label() -> None:
    labels = AccountLabels(["acme"], top_n=2)
    labels.observe({"a": 10, "b": 8, "c": 1})
    assert labels.refresh() == []
    labels.observe({"c": 50, "d": 40})
    assert labels.refresh() == ["a", "b"]
    assert (labels.label("c"), labels.label("d"), labels.label("a")) == ("c", "d", OTHER)
    assert labels.refresh() == []  # nothing changed since


def test_top_zero_labels_only_configured_accounts() -> None:
    labels = AccountLabels(["acme"], top_n=0)
    labels.observe({"a": 100})
    assert labels.refresh() == []
    assert (labels.label("a"), labels.label("acme")) == (OTHER, "acme")


def test_memory_is_bounded_and_heavy_hitters_win_among_many_accounts() -> None:
    top_n = 3
    labels = AccountLabels(["acme"], top_n=top_n)
    rng = random.Random(11)
    stream = [f"acct-{i}" for i in range(10_000)] + ["heavy-1", "heavy-2", "heavy-3"] * 1000
    rng.shuffle(stream)
    for i in range(0, len(stream), 7):
        labels.observe(Counter(stream[i : i + 7]))
        assert len(labels.counts) <= 10 * top_n
    labels.refresh()
    assert {a for a in labels.counts if labels.label(a) != OTHER} == {
        "heavy-1",
        "heavy-2",
        "heavy-3",
    }
    assert labels.label("acct-17") == OTHER
    distinct_labels = {labels.label(a) for a in [*stream, "acme"]}
    assert distinct_labels == {"heavy-1", "heavy-2", "heavy-3", "acme", OTHER}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from([f"a{i}" for i in range(40)]),
            st.integers(min_value=1, max_value=50),
            max_size=8,
        ),
        max_size=60,
    ),
    st.integers(min_value=1, max_value=3),
)
def test_misra_gries_bounds(batches: list[dict[str, int]], top_n: int) -> None:
    """At most capacity counters; each estimate is never above the true volume and at most
    total / (capacity + 1) below it."""
    labels = AccountLabels(["a0"], top_n=top_n)
    true: Counter[str] = Counter()
    for volumes in batches:
        labels.observe(volumes)
        true.update({a: n for a, n in volumes.items() if a != "a0"})
        assert len(labels.counts) <= labels.capacity
    total = sum(true.values())
    for account, n in true.items():
        est = labels.counts.get(account, 0)
        assert est <= n
        assert est >= n - total / (labels.capacity + 1)
    assert "a0" not in labels.counts
    labels.refresh()
    labeled = {a for a in true if labels.label(a) != OTHER}
    assert len(labeled) <= top_n
