"""The yardstick: gradient features as the paper's released code and LESS compute them.

Batch size 1; every LoRA parameter trainable, so `loss.backward()` runs through every decoder
layer; the configured layer's LoRA gradients are flattened and multiplied by a dense matrix, as
TRAK's projector does (our engine's seeded sparse JL matrix, materialised: a dense matmul costs the
same whatever its entries, and the same matrix keeps the features comparable); scores from the full logits; image grounding
from a second forward pass with a zeroed image, as the reference code does. Same model, same
encoding, same dtype and projection dimension as ours: only the method differs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from core.samples import EngineSample
from workers.engine.features.lora_grads import lora_parameters
from workers.engine.features.projection import SparseJLProjector
from workers.engine.models import IGNORE_INDEX, LoadedModel, collate, encode_sample


@dataclass
class ReferenceResult:
    ids: np.ndarray  # int64[n]
    grads: torch.Tensor  # float32[n, D] exact per-sample gradients
    features: np.ndarray  # float16[n, proj_dim]
    scores: dict[str, np.ndarray]  # float32[n]: ppl, el2n, entropy, grand, ig


class ReferenceFeatures:
    def __init__(self, loaded: LoadedModel, layers: list[int], proj_dim: int, seed: int, nnz: int) -> None:
        self.loaded = loaded
        self.params = [p for _, _, p in lora_parameters(loaded, layers)]
        dim = sum(p.numel() for p in self.params)
        self.matrix = SparseJLProjector(dim, proj_dim, seed, nnz, loaded.device).dense_matrix()

    def _scores_from_logits(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        shift_logits, shift_labels = logits[0, :-1].float(), labels[0, 1:]
        keep = shift_labels != IGNORE_INDEX
        p = torch.softmax(shift_logits[keep], dim=-1)
        onehot = torch.nn.functional.one_hot(shift_labels[keep], p.shape[-1]).float()
        el2n = torch.linalg.vector_norm(p - onehot, dim=-1).mean()
        entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(-1).mean()
        return float(el2n), float(entropy)

    def run_one(self, sample: EngineSample) -> tuple[torch.Tensor, dict[str, float]]:
        loaded = self.loaded
        model = loaded.hf_model
        batch = collate([encode_sample(loaded, sample)], loaded.tokenizer.pad_token_id).to(loaded.device, loaded.dtype)
        inputs = batch.model_inputs()
        inputs.pop("position_ids")
        out = model(**inputs, labels=batch.labels)
        loaded.model.zero_grad(set_to_none=True)
        out.loss.backward()
        grad = torch.cat([p.grad.detach().flatten().float() for p in self.params])  # on the model's device
        el2n, entropy = self._scores_from_logits(out.logits.detach(), batch.labels)
        scores = {"ppl": math.exp(out.loss.item()), "el2n": el2n, "entropy": entropy, "grand": float(grad.norm())}
        if batch.pixel_values is not None:
            with torch.no_grad():
                zeroed = model(**{**inputs, "pixel_values": torch.zeros_like(batch.pixel_values)}, labels=batch.labels)
            scores["ig"] = math.exp(float(zeroed.loss)) / scores["ppl"]
        else:
            scores["ig"] = math.nan
        loaded.model.zero_grad(set_to_none=True)
        return grad, scores

    def run(self, samples: Sequence[EngineSample]) -> ReferenceResult:
        model = self.loaded.model
        flags = {id(p): p.requires_grad for p in model.parameters()}
        try:
            model.eval()
            for name, p in model.named_parameters():
                p.requires_grad_("lora_" in name)  # the reference trains/differentiates every LoRA layer
            rows, scores = [], []
            for s in samples:
                g, sc = self.run_one(s)
                rows.append(g)
                scores.append(sc)
        finally:
            for p in model.parameters():
                p.requires_grad_(flags[id(p)])
        grads = torch.stack(rows)
        features = (grads @ self.matrix).to(torch.float16).cpu().numpy()
        return ReferenceResult(
            ids=np.array([s.id for s in samples], dtype=np.int64),
            grads=grads,
            features=features,
            scores={k: np.array([sc[k] for sc in scores], dtype=np.float32) for k in scores[0]},
        )
