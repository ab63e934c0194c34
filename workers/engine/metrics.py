"""Lifelong-learning metrics over an accuracy matrix (DESIGN §7). Pure numpy.

Conventions shared by every function here:

- ``acc`` has shape (T, S), float: ``acc[t, s]`` is the accuracy on skill ``s`` after round
  ``t`` (rounds are 0-based rows; row ``T - 1`` is the latest). ``NaN`` marks a skill that was
  not evaluated at that round (typically: its data has not arrived yet).
- ``base`` has shape (S,): the accuracy of the initial model (before round 0) on each skill;
  ``NaN`` where unknown.
- A skill's *arrival round* is the first row where it has a finite value, unless given.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def _as_matrix(acc: np.ndarray | list) -> np.ndarray:
    a = np.asarray(acc, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"acc must be a non-empty (rounds, skills) matrix, got shape {a.shape}")
    return a


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def arrival_rounds(acc: np.ndarray | list) -> np.ndarray:
    """First row with a finite value per skill; -1 for a skill never evaluated. Shape (S,)."""
    a = _as_matrix(acc)
    finite = np.isfinite(a)
    return np.where(finite.any(axis=0), finite.argmax(axis=0), -1)


def average_accuracy(acc: np.ndarray | list) -> float:
    """Mean over skills of the last row, skills not evaluated there (NaN) left out."""
    return _nanmean(_as_matrix(acc)[-1])


def forgetting_per_skill(acc: np.ndarray | list) -> np.ndarray:
    """f_s = max_{l < T-1} acc[l, s] - acc[T-1, s]  (Chaudhry et al. 2018, "Riemannian Walk").

    NaN for a skill without a finite score both at the last round and at some earlier round
    (e.g. it arrived only in the last round). Not clipped at 0: a negative value means the
    skill improved after its best earlier score (backward transfer). Shape (S,).
    """
    a = _as_matrix(acc)
    out = np.full(a.shape[1], np.nan)
    if a.shape[0] < 2:
        return out
    earlier, last = a[:-1], a[-1]
    seen = np.isfinite(earlier).any(axis=0) & np.isfinite(last)
    out[seen] = np.nanmax(earlier[:, seen], axis=0) - last[seen]
    return out


def forgetting(acc: np.ndarray | list) -> float:
    """Average forgetting F_T: mean of `forgetting_per_skill` over skills seen before the last round."""
    return _nanmean(forgetting_per_skill(acc))


def forward_transfer_per_skill(
    acc: np.ndarray | list, base: np.ndarray | list, arrival: np.ndarray | list | None = None
) -> np.ndarray:
    """fwt_s = acc[r_s, s] - base[s], r_s = the round whose data first contained skill s.

    This is the gain from the round that brought a skill, measured right after it, over the
    initial model (the plasticity side of the trade-off; Lopez-Paz & Ranzato 2017 measure the
    accuracy *before* that round instead, which needs an evaluation of not-yet-arrived skills).
    ``arrival`` defaults to `arrival_rounds`; -1 or NaN inputs give NaN. Shape (S,).
    """
    a = _as_matrix(acc)
    b = np.asarray(base, dtype=np.float64)
    if b.shape != (a.shape[1],):
        raise ValueError(f"base must have shape ({a.shape[1]},), got {b.shape}")
    r = arrival_rounds(a) if arrival is None else np.asarray(arrival, dtype=np.int64)
    if r.shape != (a.shape[1],) or np.any(r >= a.shape[0]):
        raise ValueError(f"arrival must be {a.shape[1]} row indices < {a.shape[0]}, got {r.tolist()}")
    out = np.full(a.shape[1], np.nan)
    ok = r >= 0
    out[ok] = a[r[ok], np.flatnonzero(ok)] - b[ok]
    return out


def forward_transfer(
    acc: np.ndarray | list, base: np.ndarray | list, arrival: np.ndarray | list | None = None
) -> float:
    """Mean of `forward_transfer_per_skill` over skills where it is defined."""
    return _nanmean(forward_transfer_per_skill(acc, base, arrival))


def relative_gain(acc: np.ndarray | list, reference: np.ndarray | list) -> float:
    """Mean over skills of last-row accuracy / the reference run's last-row accuracy, in percent.

    As in Adapt-∞ (after Scialom et al. 2022): the reference is usually the multi-task or
    full-data run; 100 means on par. Skills where either value is NaN or the reference is 0
    are left out (a ratio to 0 has no meaning). Both matrices must have the same skill columns.
    """
    a, ref = _as_matrix(acc), _as_matrix(reference)
    if a.shape[1] != ref.shape[1]:
        raise ValueError(f"reference has {ref.shape[1]} skills, acc has {a.shape[1]}")
    x, y = a[-1], ref[-1]
    ok = np.isfinite(x) & np.isfinite(y) & (y != 0)
    return float(100.0 * np.mean(x[ok] / y[ok])) if ok.any() else float("nan")


@dataclass(frozen=True)
class LifelongMetrics:
    avg_acc: float
    forgetting: float
    forward_transfer: float
    relative_gain: float

    def to_dict(self) -> dict[str, float | None]:
        # JSON has no NaN: undefined metrics become null.
        return {k: (None if v != v else v) for k, v in asdict(self).items()}


def summarize_lifelong(
    acc: np.ndarray | list,
    base: np.ndarray | list | None = None,
    reference: np.ndarray | list | None = None,
) -> LifelongMetrics:
    """All §7 metrics at once; those whose input is missing are NaN."""
    a = _as_matrix(acc)
    return LifelongMetrics(
        avg_acc=average_accuracy(a),
        forgetting=forgetting(a),
        forward_transfer=forward_transfer(a, base) if base is not None else float("nan"),
        relative_gain=relative_gain(a, reference) if reference is not None else float("nan"),
    )
