"""Engine defaults that the pool config (service) and the engine (workers) must agree on."""
from __future__ import annotations

# The seven linear modules of a LLaMA-family decoder layer (attention and MLP): Adapt-∞'s released
# code puts LoRA on all of them.
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Non-zeros per gradient coordinate in the sparse JL feature projection.
PROJECTION_NNZ = 4
