"""A checkpoint's evaluation scores pooled per skill: what a row of the accuracy matrix holds.

Plain Python (no numpy): the API reads it on every `/metrics` request and the workers when a round ends.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def pool_by_skill(results: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, float | None]]:
    """One checkpoint's scores per skill from its evaluation sets' (skill, {loss, accuracy, n, n_scored}).

    Sets of one skill are pooled sample-weighted: loss by `n`, accuracy by `n_scored` (the samples
    with a short answer; `n` when absent). A value no set has is None; `n` is the samples in all.
    """
    sums: dict[str, list[float]] = {}  # skill -> [loss·n, n with loss, hits, scored, n]
    for skill, m in results:
        t = sums.setdefault(skill, [0.0, 0.0, 0.0, 0.0, 0.0])
        n = float(m.get("n") or 1)
        t[4] += n
        if m.get("loss") is not None:
            t[0], t[1] = t[0] + float(m["loss"]) * n, t[1] + n
        if m.get("accuracy") is not None:
            w = float(m.get("n_scored") or n)
            t[2], t[3] = t[2] + float(m["accuracy"]) * w, t[3] + w
    return {skill: {"loss": t[0] / t[1] if t[1] else None, "accuracy": t[2] / t[3] if t[3] else None, "n": int(t[4])}
            for skill, t in sums.items()}
