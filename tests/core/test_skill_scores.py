"""core.skill_scores.pool_by_skill: evaluation sets of one skill pooled sample-weighted, by hand."""
import pytest

from core.skill_scores import pool_by_skill


def test_sets_of_a_skill_are_pooled_by_their_samples():
    pooled = pool_by_skill([
        ("color", {"loss": 1.0, "accuracy": 0.2, "n": 10, "n_scored": 10}),
        ("color", {"loss": 2.0, "accuracy": 0.6, "n": 30, "n_scored": 10}),  # 20 answers too long to score
        ("count", {"loss": 0.5, "accuracy": 0.5, "n": 4}),  # no n_scored: weighted by n
    ])
    assert pooled["color"] == {"loss": pytest.approx((10 * 1.0 + 30 * 2.0) / 40),
                               "accuracy": pytest.approx((10 * 0.2 + 10 * 0.6) / 20), "n": 40}
    assert pooled["count"] == {"loss": 0.5, "accuracy": 0.5, "n": 4}


def test_a_value_no_set_has_is_none():
    pooled = pool_by_skill([("captions", {"loss": 2.5, "accuracy": None, "n": 8, "n_scored": 0})])
    assert pooled == {"captions": {"loss": 2.5, "accuracy": None, "n": 8}}
    assert pool_by_skill([]) == {}
