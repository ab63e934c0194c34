"""LoRA target-module names shared by the pool config (service) and the model loader (workers)."""
from __future__ import annotations

# The seven linear modules of a LLaMA-family decoder layer (attention and MLP): Adapt-∞'s released
# recipe puts LoRA on all of them.
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
