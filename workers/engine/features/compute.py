"""One batched pass: projected per-sample LoRA gradients and the five scores."""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from core.samples import EngineSample
from workers.engine.features.config import SCORE_NAMES, FeatureBatch, FeatureConfig
from workers.engine.features.lora_grads import LoraGradCapture
from workers.engine.features.projection import SparseJLProjector
from workers.engine.features.scores import gather_response, per_sample_mean, token_scores
from workers.engine.models.batching import collate, token_groups
from workers.engine.models.encoding import IGNORE_INDEX, EncodedSample, encode_sample
from workers.engine.models.loading import LoadedModel

OnBatch = Callable[[int, int], None]


class FeatureEngine:
    """Holds what is reused across batches: the hooks and the projector."""

    def __init__(self, loaded: LoadedModel, cfg: FeatureConfig) -> None:
        self.loaded, self.cfg = loaded, cfg
        self.layers = cfg.resolve_layers(loaded.num_layers)
        self.capture = LoraGradCapture(loaded, self.layers)
        self.projector = SparseJLProjector(self.capture.dim, cfg.proj_dim, cfg.seed, cfg.projection_nnz, loaded.device)

    def _backbone(self, batch: Any) -> Any:
        """Last hidden states (the decoder's final norm applied), float[n, L, d]."""
        return self.loaded.hf_model.base_model(**batch.model_inputs(), use_cache=False).last_hidden_state

    def _lm_head(self, hidden: Any) -> Any:
        return self.loaded.hf_model.get_output_embeddings()(hidden)

    def gradient_pass(self, encoded: Sequence[EncodedSample]) -> dict[str, Any]:
        """Per-sample unprojected gradients float32[n, D] and the image-conditioned token scores."""
        import torch

        loaded = self.loaded
        batch = collate(encoded, loaded.tokenizer.pad_token_id, self.cfg.padding_side).to(loaded.device, loaded.dtype)
        with self.capture.capturing(), torch.enable_grad():
            hidden = self._backbone(batch)
            tokens = gather_response(hidden, batch.labels)
            per_token = token_scores(self._lm_head(tokens.hidden), tokens.targets)
            mean_nll = per_sample_mean(per_token["nll"], tokens)
            # the sum of per-sample means: its gradient splits exactly into per-sample gradients
            grads = self.capture.per_sample_grads(mean_nll.sum(), batch.attention_mask.bool())
        return {
            "grads": grads,
            "hidden": _mean_pool(hidden.detach(), batch.attention_mask) if self.cfg.hidden_embedding else None,
            "nll": mean_nll.detach(),
            "el2n": per_sample_mean(per_token["el2n"].detach(), tokens),
            "entropy": per_sample_mean(per_token["entropy"].detach(), tokens),
        }

    def text_only_nll(self, encoded: Sequence[EncodedSample]) -> Any:
        """Mean response NLL without the image tokens (no grad), float32[n]; a batch whose padded
        size would pass `max_length` tokens runs as micro-batches (`token_groups`), as the
        gradient pass does."""
        import torch

        loaded = self.loaded
        was_training = loaded.model.training
        loaded.model.eval()
        groups = token_groups([len(e.input_ids) for e in encoded], self.cfg.max_length)
        parts = []
        try:
            for group in groups:
                batch = collate([encoded[i] for i in group], loaded.tokenizer.pad_token_id,
                                self.cfg.padding_side).to(loaded.device, loaded.dtype)
                with torch.no_grad():
                    tokens = gather_response(self._backbone(batch), batch.labels)
                    parts.append(per_sample_mean(token_scores(self._lm_head(tokens.hidden), tokens.targets)["nll"], tokens))
        finally:
            loaded.model.train(was_training)
        if len(parts) == 1:
            return parts[0]
        inverse = torch.from_numpy(np.argsort(np.concatenate(groups)))  # back to batch order
        return torch.cat(parts)[inverse.to(parts[0].device)]

    def _grouped_gradient_pass(self, encoded: Sequence[EncodedSample]) -> dict[str, Any]:
        """`gradient_pass` on micro-batches of similar lengths when padding the batch would pass
        `max_length` tokens (`token_groups`); each sample's results do not depend on its batch."""
        import torch

        groups = token_groups([len(e.input_ids) for e in encoded], self.cfg.max_length)
        if len(groups) == 1:
            return self.gradient_pass(encoded)
        parts = [self.gradient_pass([encoded[i] for i in g]) for g in groups]
        inverse = torch.from_numpy(np.argsort(np.concatenate(groups)))  # back to batch order
        out = {}
        for key, first in parts[0].items():
            out[key] = None if first is None else torch.cat([p[key] for p in parts])[inverse.to(first.device)]
        return out

    def run_batch(self, samples: Sequence[EngineSample]) -> FeatureBatch:
        import torch

        cfg, loaded = self.cfg, self.loaded
        encoded = [encode_sample(loaded, s, max_length=cfg.max_length) for s in samples]
        out = self._grouped_gradient_pass(encoded)
        features = self.projector.project(out["grads"]).to(torch.float16)
        ig = torch.full((len(samples),), math.nan, dtype=torch.float32)
        with_image = [i for i, e in enumerate(encoded) if e.pixel_values is not None]
        if with_image:
            text = [_match_response(encode_sample(loaded, samples[i], text_only=True), encoded[i]) for i in with_image]
            nll_text = self.text_only_nll(text)
            # ppl(text only) / ppl(image + text) = exp(nll_text − nll_image)
            ig[with_image] = torch.exp(nll_text - out["nll"][with_image]).float().cpu()
        scores = {
            "ppl": torch.exp(out["nll"]),
            "el2n": out["el2n"],
            "entropy": out["entropy"],
            "grand": out["grads"].norm(dim=1),
            "ig": ig,
        }
        return FeatureBatch(
            ids=np.array([s.id for s in samples], dtype=np.int64),
            features=features.cpu().numpy(),
            scores={k: scores[k].float().cpu().numpy() for k in SCORE_NAMES},
            hidden=None if out["hidden"] is None else out["hidden"].to(torch.float16).cpu().numpy(),
        )

    def run(self, samples: Sequence[EngineSample], on_batch: OnBatch | None = None) -> FeatureBatch:
        """All samples, batched by `cfg.batch_size` (by similar length if configured), in input order."""
        order = list(range(len(samples)))
        if self.cfg.sort_by_length:
            order.sort(key=lambda i: _approx_length(samples[i]))
        parts = []
        for k in range(0, len(order), self.cfg.batch_size):
            parts.append(self.run_batch([samples[i] for i in order[k: k + self.cfg.batch_size]]))
            if on_batch is not None:
                on_batch(min(k + self.cfg.batch_size, len(order)), len(order))
        merged = FeatureBatch.concat(parts)
        inverse = np.argsort(np.array(order))
        return FeatureBatch(merged.ids[inverse], merged.features[inverse], {k: v[inverse] for k, v in merged.scores.items()},
                            None if merged.hidden is None else merged.hidden[inverse])


def _mean_pool(hidden: Any, attention_mask: Any) -> Any:
    """Mean of each sample's last hidden states over its attended tokens (image tokens included),
    float32[n, d]: padding does not change it."""
    import torch

    mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # 0/1: the product is exact in any dtype
    summed = (hidden * mask).sum(dim=1, dtype=torch.float32)  # summed in float32, not in bfloat16
    return summed / attention_mask.sum(dim=1, keepdim=True).clamp(min=1).float()


def _approx_length(sample: EngineSample) -> tuple[int, int]:
    return len(sample.images), sum(len(m.content) for m in sample.messages)


def _match_response(text: EncodedSample, full: EncodedSample) -> EncodedSample:
    """Supervise the same response tokens in the text-only encoding as in the image one (the image
    version may have lost its tail to max_length; the shorter text-only one has not)."""
    keep = full.n_response
    if text.n_response < keep:
        raise ValueError(f"sample {full.id}: text-only encoding has fewer response tokens than the image one")
    labels = text.labels.clone()
    supervised = (labels != IGNORE_INDEX).nonzero().flatten()
    labels[supervised[keep:]] = IGNORE_INDEX
    return EncodedSample(text.id, text.input_ids, labels, None)


def compute_features(loaded: LoadedModel, samples: Sequence[EngineSample], cfg: FeatureConfig,
                     on_batch: OnBatch | None = None) -> FeatureBatch:
    """Gradient features and scores of `samples` with the current adapter of `loaded`.

    Args:
        samples: n samples; text-only samples (and every sample of a causal-lm) get ig = NaN.
        on_batch: called after every batch with (samples done, n): progress, and the place a
            caller stops the pass by raising (a cancelled job).
    Returns:
        FeatureBatch with ids int64[n], features float16[n, proj_dim], scores float32[n] each.
    """
    if not samples:
        raise ValueError("compute_features needs at least one sample")
    return FeatureEngine(loaded, cfg).run(samples, on_batch)
