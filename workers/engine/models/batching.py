"""Pad encoded samples into one batch; position ids follow the attention mask on either side."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from workers.engine.models.encoding import IGNORE_INDEX, EncodedSample

PADDING_SIDES = ("right", "left")


@dataclass
class Batch:
    """Padded tensors (on `device` after `to`).

    Args:
        input_ids, labels, attention_mask, position_ids: int64[n, L].
        pixel_values: float[total_images, 3, H, W] in sample order, or None.
    """

    ids: list[int]
    input_ids: Any
    labels: Any
    attention_mask: Any
    position_ids: Any
    pixel_values: Any | None

    def to(self, device: Any, dtype: Any) -> "Batch":
        pv = None if self.pixel_values is None else self.pixel_values.to(device=device, dtype=dtype)
        return Batch(
            self.ids, self.input_ids.to(device), self.labels.to(device), self.attention_mask.to(device),
            self.position_ids.to(device), pv,
        )

    def model_inputs(self) -> dict[str, Any]:
        out = dict(input_ids=self.input_ids, attention_mask=self.attention_mask, position_ids=self.position_ids)
        if self.pixel_values is not None:
            out["pixel_values"] = self.pixel_values
        return out


def token_groups(lengths: Sequence[int], budget: int | None) -> list[list[int]]:
    """Indices of `lengths` in micro-batches whose padded size (count × longest) stays within
    `budget` tokens; one group in the given order when the whole batch fits, has no padding at all
    (every sample as long as the longest), or budget is None.

    Padding is what makes a mixed batch expensive: with any padding the attention mask is
    explicit, and CPU SDPA then builds count × heads × longest² scores. One 4,096-token sample
    padded into a batch of four took 1.17 GB in a training step on tiny-causal-lm, against 0.15 GB
    alone (measured), while four unpadded ones took 0.6 GB. Otherwise the longest go first, each
    group filled greedily; a sample over the budget on its own is a group of one.
    """
    if not lengths:
        return []
    if budget is None or len(lengths) * max(lengths) <= budget or min(lengths) == max(lengths):
        return [list(range(len(lengths)))]
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):  # stable: ties keep batch order
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= budget:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def collate(samples: Sequence[EncodedSample], pad_id: int, padding_side: str = "right") -> Batch:
    """Pad to the longest sample. Position ids count real tokens only, so left padding is exact."""
    import torch

    if padding_side not in PADDING_SIDES:
        raise ValueError(f"padding_side must be one of {PADDING_SIDES}, got {padding_side!r}")
    if not samples:
        raise ValueError("collate needs at least one sample")
    n, length = len(samples), max(len(s.input_ids) for s in samples)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)
    labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((n, length), dtype=torch.long)
    for i, s in enumerate(samples):
        k = len(s.input_ids)
        span = slice(0, k) if padding_side == "right" else slice(length - k, length)
        input_ids[i, span], labels[i, span], mask[i, span] = s.input_ids, s.labels, 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    pixels = [s.pixel_values for s in samples if s.pixel_values is not None]
    return Batch([s.id for s in samples], input_ids, labels, mask, position_ids, torch.cat(pixels) if pixels else None)
