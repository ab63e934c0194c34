"""Water-filling a budget across clusters: exact sums, never more than a cluster holds."""
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.engine.selection.budget import allocate_budget

sizes_st = st.lists(st.integers(0, 500), min_size=1, max_size=30)


def water_fill_reference(sizes, budget):
    """Slow obvious reference: hand out one sample at a time to the smallest allocation."""
    alloc = [0] * len(sizes)
    for _ in range(min(budget, sum(sizes))):
        open_ = [i for i in range(len(sizes)) if alloc[i] < sizes[i]]
        i = min(open_, key=lambda i: (alloc[i], i))
        alloc[i] += 1
    return alloc


@settings(max_examples=200, deadline=None)
@given(sizes_st, st.integers(0, 20_000))
def test_allocation_is_exact_and_bounded(sizes, budget):
    alloc = allocate_budget(sizes, budget)
    assert sum(alloc) == min(budget, sum(sizes))
    assert all(0 <= a <= s for a, s in zip(alloc, sizes))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=8), st.integers(0, 300))
def test_allocation_matches_one_at_a_time_water_filling(sizes, budget):
    assert allocate_budget(sizes, budget) == water_fill_reference(sizes, budget)


def test_small_clusters_are_taken_whole_and_rest_resplit():
    assert allocate_budget([3, 100, 100], 63) == [3, 30, 30]
    assert allocate_budget([3, 100, 100], 64) == [3, 31, 30]
    assert allocate_budget([5, 5], 100) == [5, 5]
