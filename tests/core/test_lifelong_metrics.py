"""core.lifelong_metrics against hand-computed values, on matrices shaped as the service makes them:
every skill scored after every round, so a skill has accuracies before it arrives."""
from __future__ import annotations

import math

import numpy as np
import pytest

from core.lifelong_metrics import (
    backward_transfer_per_skill,
    forgetting_per_skill,
    forward_transfer_per_skill,
    mean_average_accuracy,
    relative_gain,
    summarize_lifelong,
)

# Four rounds; skill A arrives in round 0, B in round 1, C in the last round, D never (unseen).
ACC = np.array([
    #  A     B     C     D
    [0.50, 0.10, 0.05, 0.20],
    [0.40, 0.70, 0.05, 0.25],
    [0.60, 0.65, 0.10, 0.30],
    [0.55, 0.80, 0.90, 0.35],
])
ARRIVAL = [0, 1, 3, -1]
BASE = [0.05, 0.10, 0.02, 0.20]
REFERENCE = [1.10, 0.80, 0.90, 0.50]


def test_forgetting_by_hand():
    per = forgetting_per_skill(ACC, ARRIVAL)
    assert per[0] == pytest.approx(0.60 - 0.55)  # best of rounds 0..2 minus the last
    assert per[1] == pytest.approx(0.70 - 0.80)  # B kept improving: negative forgetting
    assert math.isnan(per[2]) and math.isnan(per[3])  # arrived last / never arrived
    assert summarize_lifelong(ACC, ARRIVAL).forgetting == pytest.approx((0.05 - 0.10) / 2)


def test_the_issue_example_no_longer_counts_scores_before_arrival():
    # Skill 2 is scored 0.0 in round 1 before its data arrives in round 2. Forgetting is
    # 0.6 - 0.5 = 0.1 (skill 1 only); the old code called skill 2 arrived in round 1 and gave -0.40.
    acc = [[0.6, 0.0], [0.5, 0.9]]
    m = summarize_lifelong(acc, [0, 1], base=[0.0, 0.0])
    assert m.forgetting == pytest.approx(0.10)
    assert m.forward_transfer == pytest.approx(0.0)  # round 1 (before arrival) minus the base
    assert m.avg_acc == pytest.approx(0.7)


def test_backward_and_forward_transfer_by_hand():
    bwt = backward_transfer_per_skill(ACC, ARRIVAL)
    assert bwt[:2] == pytest.approx([0.55 - 0.50, 0.80 - 0.70]) and np.isnan(bwt[2:]).all()
    fwt = forward_transfer_per_skill(ACC, ARRIVAL, BASE)
    assert math.isnan(fwt[0])  # arrived in the first round: no round before it
    assert fwt[1:3] == pytest.approx([0.10 - 0.10, 0.10 - 0.02])  # acc right before arrival − base
    assert math.isnan(fwt[3])
    m = summarize_lifelong(ACC, ARRIVAL, base=BASE)
    assert m.backward_transfer == pytest.approx(0.075)
    assert m.forward_transfer == pytest.approx(0.04)


def test_average_accuracy_and_mcitlib_metrics_by_hand():
    m = summarize_lifelong(ACC, ARRIVAL)
    assert m.avg_acc == pytest.approx((0.55 + 0.80 + 0.90) / 3)  # D (unseen) left out
    assert m.mfn == pytest.approx(m.avg_acc)
    assert m.mft == pytest.approx((0.50 + 0.70 + 0.90) / 3)  # each skill right after arrival
    # per round, over the skills arrived by then: {A}, {A, B}, {A, B}, {A, B, C}
    assert m.maa == pytest.approx((0.50 + 0.55 + 0.625 + 0.75) / 4)
    assert mean_average_accuracy(ACC, ARRIVAL) == pytest.approx(m.maa)
    assert (m.skills_arrived, m.skills_unseen) == (3, 1)


def test_relative_gain_by_hand():
    assert relative_gain(ACC, ARRIVAL, REFERENCE) == pytest.approx(100 * (0.5 + 1.0 + 1.0) / 3)
    # a reference of 0 or NaN for a skill leaves that skill out
    assert relative_gain(ACC, ARRIVAL, [0.0, 0.8, float("nan"), 0.5]) == pytest.approx(100.0)
    assert summarize_lifelong(ACC, ARRIVAL, reference=REFERENCE).relative_gain == pytest.approx(250 / 3)


def test_missing_evaluations_are_skipped_not_zero():
    acc = ACC.copy()
    acc[0, 0] = np.nan  # A not evaluated in round 0
    per = forgetting_per_skill(acc, ARRIVAL)
    assert per[0] == pytest.approx(0.60 - 0.55)
    assert math.isnan(backward_transfer_per_skill(acc, ARRIVAL)[0])


def test_single_round_and_nothing_arrived():
    one = summarize_lifelong([[0.3, 0.4]], [0, -1], base=[0.1, 0.1])
    assert one.avg_acc == pytest.approx(0.3) and one.mft == pytest.approx(0.3) and one.maa == pytest.approx(0.3)
    assert math.isnan(one.forgetting) and math.isnan(one.backward_transfer) and math.isnan(one.forward_transfer)
    none = summarize_lifelong([[0.3, 0.4]], [-1, -1]).to_dict()
    assert none["avg_acc"] is None and none["maa"] is None and none["skills_unseen"] == 2


@pytest.mark.parametrize("arrival", [[0, 1, 3], [0, 1, 4, -1], [0, 1, -2, -1], [0.0, 1.0, 3.0, -1.0]])
def test_bad_arrival_is_refused(arrival):
    with pytest.raises(ValueError, match="arrival"):
        summarize_lifelong(ACC, arrival)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="acc"):
        summarize_lifelong([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="base"):
        forward_transfer_per_skill(ACC, ARRIVAL, [0.1])
    with pytest.raises(ValueError, match="reference"):
        relative_gain(ACC, ARRIVAL, [0.1])
