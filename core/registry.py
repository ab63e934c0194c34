"""The one registry of scoring experts and selection methods.

Adding an expert means: its compute function (workers/engine/features/scores.py and
FeatureEngine.run_batch), its name here, and a migration adding its column to `scores`.
Everything else (pool config validation, the feature batch, the selector's tie-break order,
score rows) reads this tuple; tests/core/test_registry.py checks that nothing keeps its own list.
"""
from __future__ import annotations

# Also the selector's fixed tie-break order between experts of equal histogram entropy.
EXPERTS: tuple[str, ...] = ("ppl", "el2n", "entropy", "grand", "ig")
BASE_METHODS: tuple[str, ...] = ("adapt-inf", "random", "semdedup", "full")
# A round's `method`: a base method, or "score:<expert>" (one fixed expert everywhere).
METHODS: tuple[str, ...] = BASE_METHODS + tuple(f"score:{e}" for e in EXPERTS)
