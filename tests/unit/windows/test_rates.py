"""pipeline.windows.rates: weighted engagement and rates that exist only with a
positive denominator."""

from __future__ import annotations

import pytest

from pipeline.windows.rates import headline, rate, weighted_engagement

W = {"like": 1.0, "comment": 2.0, "share": 3.0, "reply": 0.0}


@pytest.mark.parametrize(
    ("counts", "weights", "expected"),
    [
        ({}, W, 0.0),
        ({"like": 4}, W, 4.0),
        ({"like": 4, "comment": 1, "share": 2}, W, 12.0),
        ({"reply": 9}, W, 0.0),
        ({"dm": 5}, W, 0.0),  # a kind without a weight weighs nothing
        ({"like": 3}, {"like": 0.5}, 1.5),
        ({"like": 0, "share": 0}, W, 0.0),
    ],
)
def test_weighted_engagement(
    counts: dict[str, int], weights: dict[str, float], expected: float
) -> None:
    got = weighted_engagement(counts, weights)
    assert isinstance(got, float)
    assert got == expected


@pytest.mark.parametrize(
    ("weighted", "denominator", "expected"),
    [
        (10.0, 200, 0.05),
        (0.0, 200, 0.0),
        (3.0, 1, 3.0),
        (10.0, None, None),
        (10.0, 0, None),
        (10.0, -5, None),
    ],
)
def test_rate(weighted: float, denominator: int | None, expected: float | None) -> None:
    got = rate(weighted, denominator)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


@pytest.mark.parametrize(
    ("basis", "expected"),
    [("followers", 0.01), ("reach", 0.2), ("impressions", None), ("clicks", None)],
)
def test_headline_is_the_rate_of_the_configured_basis(basis: str, expected: float | None) -> None:
    rates = {"followers": 0.01, "reach": 0.2, "impressions": None}
    assert headline(rates, basis) == expected
