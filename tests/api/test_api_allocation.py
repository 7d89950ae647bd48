"""Property tests: spreading a charge always adds up exactly, overrides are kept."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.documents.allocation import AllocationError, allocate

lines = st.lists(
    st.tuples(st.integers(0, 10**9), st.one_of(st.none(), st.integers(0, 10**6))),
    min_size=1,
    max_size=40,
)


@given(pool=st.integers(0, 10**10), spec=lines)
def test_allocation_sums_exactly_or_refuses(pool: int, spec: list[tuple[int, int | None]]) -> None:
    weights = [w for w, _ in spec]
    overrides = [o for _, o in spec]
    try:
        parts = allocate(pool, weights, overrides)
    except AllocationError:
        fixed = sum(o for o in overrides if o is not None)
        assert fixed > pool or (all(o is not None for o in overrides) and fixed != pool)
        return
    assert sum(parts) == pool
    assert all(p >= 0 for p in parts)
    for p, o in zip(parts, overrides, strict=True):
        if o is not None:
            assert p == o


@given(pool=st.integers(0, 10**8), weights=st.lists(st.integers(1, 10**6), min_size=1, max_size=30))
def test_shares_are_proportional_within_one_unit(pool: int, weights: list[int]) -> None:
    parts = allocate(pool, weights, [None] * len(weights))
    total = sum(weights)
    for p, w in zip(parts, weights, strict=True):
        assert abs(p * total - pool * w) < total  # |p - pool*w/total| < 1


def test_seed_example_and_refusals() -> None:
    assert allocate(1000, [10000, 3000, 1000], [None, None, None]) == [714, 214, 72]
    assert allocate(10, [0, 0, 0], [None, None, None]) == [4, 3, 3]
    with pytest.raises(AllocationError):
        allocate(-1, [1], [None])
