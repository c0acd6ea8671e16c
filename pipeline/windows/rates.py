"""Engagement-rate formulas. A rate exists only where its denominator is positive."""

from __future__ import annotations

from collections.abc import Mapping


def weighted_engagement(counts: Mapping[str, int], weights: Mapping[str, float]) -> float:
    return float(sum(n * weights.get(kind, 0.0) for kind, n in counts.items()))


def rate(weighted: float, denominator: int | None) -> float | None:
    """weighted engagement / denominator, or None when there is no denominator."""
    if denominator is None or denominator <= 0:
        return None
    return weighted / denominator


def headline(rates: Mapping[str, float | None], basis: str) -> float | None:
    """The account's configured headline rate (basis: followers, reach or impressions)."""
    return rates.get(basis)
