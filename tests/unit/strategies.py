"""Hypothesis strategies shared by the unit tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8"), max_size=max_size)


def json_values(text_size: int, container_size: int, max_leaves: int) -> st.SearchStrategy[Any]:
    """Any JSON value: scalars (64-bit integers, finite floats), lists and objects."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | text(text_size)
    )
    keys = text(text_size)
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=container_size)
            | st.dictionaries(keys, inner, max_size=container_size)
        ),
        max_leaves=max_leaves,
    )
