"""Engine defaults that the pool config (service) and the engine (workers) must agree on."""
from __future__ import annotations

# The seven linear modules of a LLaMA-family decoder layer (attention and MLP): Adapt-∞'s released
# code puts LoRA on all of them.
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Non-zeros per gradient coordinate in the sparse JL feature projection.
PROJECTION_NNZ = 4
# The pool cap a new pool gets: the pool is bounded by default. Every round recomputes the
# gradient features of the whole pool, so the pool's size is each round's cost; one million is the
# largest pool whose selection and pruning are measured here (about 15 s and 2.7 GB on two CPU
# cores with 1,024-dimensional features, `bench/selection.py`), and its 8192-dimensional features
# (16 GB of float16) fit a worker's disk; the select stage reads them from disk (39 s and 0.9 GB
# at 200k × 8192, `bench/service_scale.py`). Set it lower (or use `budget_multiple`) when the
# feature pass or the select stage is the bottleneck.
MAX_POOL_SIZE = 1_000_000
