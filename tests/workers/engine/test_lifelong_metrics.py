import json
import math

import numpy as np
import pytest

from workers.engine.metrics import (
    arrival_rounds,
    average_accuracy,
    forgetting,
    forgetting_per_skill,
    forward_transfer,
    forward_transfer_per_skill,
    relative_gain,
    summarize_lifelong,
)

nan = float("nan")

# Three rounds, three skills; skill 1 arrives in round 1, skill 2 in round 2.
ACC = np.array(
    [
        [0.50, nan, nan],
        [0.30, 0.80, nan],
        [0.40, 0.60, 0.90],
    ]
)
BASE = np.array([0.10, 0.20, 0.30])


def test_average_accuracy_is_mean_of_last_row():
    assert average_accuracy(ACC) == pytest.approx((0.4 + 0.6 + 0.9) / 3, abs=1e-12)
    # NaNs in the last row are left out, not counted as zero.
    assert average_accuracy([[0.2, nan]]) == pytest.approx(0.2)


def test_forgetting_matches_hand_computation():
    # skill 0: max(0.5, 0.3) - 0.4 = 0.1; skill 1: 0.8 - 0.6 = 0.2; skill 2 arrived last: undefined.
    per = forgetting_per_skill(ACC)
    assert per[0] == pytest.approx(0.1, abs=1e-12)
    assert per[1] == pytest.approx(0.2, abs=1e-12)
    assert math.isnan(per[2])
    assert forgetting(ACC) == pytest.approx(0.15, abs=1e-12)


def test_forgetting_can_be_negative_and_is_nan_with_one_round():
    assert forgetting([[0.2], [0.5]]) == pytest.approx(-0.3, abs=1e-12)
    assert math.isnan(forgetting([[0.2, 0.4]]))


def test_forgetting_against_a_slow_reference_on_random_matrices():
    rng = np.random.default_rng(0)
    for _ in range(20):
        t, s = rng.integers(2, 6), rng.integers(1, 5)
        a = rng.random((t, s))
        arrive = rng.integers(0, t, size=s)
        for j, r in enumerate(arrive):
            a[:r, j] = nan
        vals = []
        for j in range(s):
            earlier = [a[l, j] for l in range(t - 1) if not math.isnan(a[l, j])]
            if earlier:
                vals.append(max(earlier) - a[t - 1, j])
        expected = sum(vals) / len(vals) if vals else nan
        got = forgetting(a)
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected, abs=1e-12)


def test_forward_transfer_uses_the_arrival_round():
    assert arrival_rounds(ACC).tolist() == [0, 1, 2]
    per = forward_transfer_per_skill(ACC, BASE)
    np.testing.assert_allclose(per, [0.5 - 0.1, 0.8 - 0.2, 0.9 - 0.3], atol=1e-12)
    assert forward_transfer(ACC, BASE) == pytest.approx((0.4 + 0.6 + 0.6) / 3, abs=1e-12)
    # An explicit arrival (skill 0 evaluated from round 0 but its data came in round 1).
    per = forward_transfer_per_skill(ACC, BASE, arrival=[1, 1, 2])
    assert per[0] == pytest.approx(0.3 - 0.1, abs=1e-12)


def test_forward_transfer_rejects_bad_shapes():
    with pytest.raises(ValueError, match="base"):
        forward_transfer(ACC, [0.1, 0.2])
    with pytest.raises(ValueError, match="arrival"):
        forward_transfer(ACC, BASE, arrival=[0, 1, 3])
    with pytest.raises(ValueError, match="acc"):
        average_accuracy([1.0, 2.0])


def test_relative_gain_is_mean_per_skill_ratio_in_percent():
    ref = np.array([[0.8, 0.6, 0.0]])
    # skill 2 has a zero reference and is left out: (0.4/0.8 + 0.6/0.6) / 2 = 0.75.
    assert relative_gain(ACC, ref) == pytest.approx(75.0, abs=1e-9)
    with pytest.raises(ValueError, match="skills"):
        relative_gain(ACC, [[0.5, 0.5]])


def test_summary_is_json_safe():
    m = summarize_lifelong(ACC, base=BASE)
    d = m.to_dict()
    assert d["relative_gain"] is None
    assert d["forgetting"] == pytest.approx(0.15)
    json.dumps(d, allow_nan=False)
