"""Lifelong-learning metrics over an accuracy matrix whose skills arrive over rounds. Pure numpy.

Inputs, shared by every function here:

- ``acc``, float (T, S): ``acc[t, s]`` is the accuracy on skill ``s`` after round ``t`` (0-based
  rows, ``L = T - 1`` the latest). The service scores every evaluation set after every round, so
  a skill has values *before* it arrives too; ``NaN`` only marks a missing evaluation.
- ``arrival``, int (S,): the row of the round whose new training data first held skill ``s``
  (``r_s``), or ``-1`` for a skill no training data ever declared ("unseen"). Unseen skills keep
  their row in the matrix but take part in no metric below. Arrival is never inferred from the
  matrix: a skill scored before it arrives has not arrived.
- ``base``, float (S,): the accuracy of the model the first round started from (the base model,
  before any training), for forward transfer.

Definitions, over the arrived skills A = {s : 0 <= r_s <= L}:

- average accuracy (= MCITlib's MFN, mean final accuracy): mean_{s in A} acc[L, s].
- forgetting (Chaudhry et al. 2018, "Riemannian Walk for Incremental Learning", ECCV), per skill
  that arrived before the last round: f_s = max_{r_s <= t <= L-1} acc[t, s] - acc[L, s]; averaged.
  Not clipped at 0: a negative value means the skill kept improving.
- backward transfer (Lopez-Paz & Ranzato 2017, "Gradient Episodic Memory", NeurIPS), same skills:
  bwt_s = acc[L, s] - acc[r_s, s]; averaged. Negative = forgetting of what the arrival round taught.
- forward transfer (Lopez-Paz & Ranzato 2017), per skill arriving after the first round:
  fwt_s = acc[r_s - 1, s] - base[s], the accuracy right before its arrival round minus the base
  model's; averaged. Skills arriving in the first round have no round before them.
- MCITlib (Guo et al. 2025, arXiv 2508.07307): MFT, mean fine-tune accuracy, mean_{s in A}
  acc[r_s, s]; MFN, mean final accuracy (as above); MAA, mean average accuracy, the mean over
  rounds t of the mean of acc[t, s] over the skills arrived by t (rounds with none are skipped).
- relative gain (Adapt-∞ §5, after Scialom et al. 2022): 100 * mean_{s in A} acc[L, s] / ref[s],
  with ``ref`` the final accuracies of a reference run (multi-task training); 100 is on par.
  Skills where the reference is 0 or missing are left out.

Every mean skips NaN terms; a metric with no term is NaN.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def _inputs(acc: np.ndarray | list, arrival: np.ndarray | list) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(acc, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"acc must be a non-empty (rounds, skills) matrix, got shape {a.shape}")
    r = np.asarray(arrival)
    if r.shape != (a.shape[1],) or not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"arrival must be {a.shape[1]} integer rows, got {r.tolist()!r}")
    if np.any((r < -1) | (r >= a.shape[0])):
        raise ValueError(f"arrival rows must be -1 (unseen) or in [0, {a.shape[0] - 1}], got {r.tolist()}")
    return a, r.astype(np.int64)


def _skill_vector(values: np.ndarray | list, n_skills: int, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (n_skills,):
        raise ValueError(f"{name} must have shape ({n_skills},), got {v.shape}")
    return v


def _mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def forgetting_per_skill(acc: np.ndarray | list, arrival: np.ndarray | list) -> np.ndarray:
    """f_s = max(acc[r_s : L, s]) - acc[L, s] for skills that arrived before the last round; NaN otherwise."""
    a, r = _inputs(acc, arrival)
    last = a.shape[0] - 1
    out = np.full(a.shape[1], np.nan)
    for s in np.flatnonzero((r >= 0) & (r < last)):
        window = a[r[s]:last, s]
        if np.isfinite(window).any():
            out[s] = np.nanmax(window) - a[last, s]
    return out


def backward_transfer_per_skill(acc: np.ndarray | list, arrival: np.ndarray | list) -> np.ndarray:
    """bwt_s = acc[L, s] - acc[r_s, s] for skills that arrived before the last round; NaN otherwise."""
    a, r = _inputs(acc, arrival)
    last = a.shape[0] - 1
    out = np.full(a.shape[1], np.nan)
    ok = (r >= 0) & (r < last)
    out[ok] = a[last, ok] - a[r[ok], np.flatnonzero(ok)]
    return out


def forward_transfer_per_skill(
    acc: np.ndarray | list, arrival: np.ndarray | list, base: np.ndarray | list
) -> np.ndarray:
    """fwt_s = acc[r_s - 1, s] - base[s] for skills arriving after the first round; NaN otherwise."""
    a, r = _inputs(acc, arrival)
    b = _skill_vector(base, a.shape[1], "base")
    out = np.full(a.shape[1], np.nan)
    ok = r >= 1
    out[ok] = a[r[ok] - 1, np.flatnonzero(ok)] - b[ok]
    return out


def mean_average_accuracy(acc: np.ndarray | list, arrival: np.ndarray | list) -> float:
    """MCITlib's MAA: mean over rounds of the mean accuracy over the skills arrived by then."""
    a, r = _inputs(acc, arrival)
    per_round = [_mean(a[t, (r >= 0) & (r <= t)]) for t in range(a.shape[0])]
    return _mean(np.array(per_round))


def relative_gain(acc: np.ndarray | list, arrival: np.ndarray | list, reference: np.ndarray | list) -> float:
    """100 * mean over arrived skills of acc[L, s] / reference[s] (reference 0 or NaN left out)."""
    a, r = _inputs(acc, arrival)
    ref = _skill_vector(reference, a.shape[1], "reference")
    x = a[-1]
    ok = (r >= 0) & np.isfinite(x) & np.isfinite(ref) & (ref != 0)
    return float(100.0 * np.mean(x[ok] / ref[ok])) if ok.any() else float("nan")


@dataclass(frozen=True)
class LifelongMetrics:
    """The summary over arrived skills; see the module docstring for each definition."""

    avg_acc: float
    forgetting: float
    backward_transfer: float
    forward_transfer: float
    mft: float
    mfn: float
    maa: float
    relative_gain: float
    skills_arrived: int
    skills_unseen: int

    def to_dict(self) -> dict[str, float | int | None]:
        # JSON has no NaN: undefined metrics become null.
        return {k: (None if isinstance(v, float) and v != v else v) for k, v in asdict(self).items()}


def summarize_lifelong(
    acc: np.ndarray | list,
    arrival: np.ndarray | list,
    base: np.ndarray | list | None = None,
    reference: np.ndarray | list | None = None,
) -> LifelongMetrics:
    """Every metric at once; forward transfer needs `base`, relative gain `reference` (else NaN)."""
    a, r = _inputs(acc, arrival)
    arrived = r >= 0
    last = a[-1, arrived]
    fwt = forward_transfer_per_skill(a, r, base) if base is not None else np.array([])
    return LifelongMetrics(
        avg_acc=_mean(last),
        forgetting=_mean(forgetting_per_skill(a, r)),
        backward_transfer=_mean(backward_transfer_per_skill(a, r)),
        forward_transfer=_mean(fwt),
        mft=_mean(a[r[arrived], np.flatnonzero(arrived)]),
        mfn=_mean(last),
        maa=mean_average_accuracy(a, r),
        relative_gain=relative_gain(a, r, reference) if reference is not None else float("nan"),
        skills_arrived=int(arrived.sum()),
        skills_unseen=int((~arrived).sum()),
    )
