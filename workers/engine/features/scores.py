"""Response-token statistics and the per-sample scores built on them (§2 step 2)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workers.engine.models.encoding import IGNORE_INDEX


@dataclass
class ResponseTokens:
    """Hidden states that predict response tokens, flattened over the batch.

    Args:
        hidden: float[N, d] (position t predicts token t+1).
        targets: int64[N]; owner: int64[N] sample index of each token; counts: float32[n].
    """

    hidden: Any
    targets: Any
    owner: Any
    counts: Any


def gather_response(hidden: Any, labels: Any) -> ResponseTokens:
    """hidden: float[n, L, d], labels: int64[n, L] -> the N response-predicting positions."""
    import torch

    n = labels.shape[0]
    predicts = labels[:, 1:] != IGNORE_INDEX
    owner = torch.arange(n, device=labels.device).unsqueeze(1).expand_as(predicts)[predicts]
    counts = torch.bincount(owner, minlength=n).float()
    if bool((counts == 0).any()):
        raise ValueError("every sample needs at least one response token")
    return ResponseTokens(hidden[:, :-1][predicts], labels[:, 1:][predicts], owner, counts)


def per_sample_mean(values: Any, tokens: ResponseTokens) -> Any:
    """Mean of a per-token float[N] over each sample's response tokens -> float[n]."""
    import torch

    sums = torch.zeros(tokens.counts.shape[0], dtype=values.dtype, device=values.device)
    return sums.index_add(0, tokens.owner, values) / tokens.counts


def token_nll(logits: Any, targets: Any) -> Any:
    import torch

    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")


def token_scores(logits: Any, targets: Any) -> dict[str, Any]:
    """Per-token NLL, EL2N (‖softmax − onehot‖₂) and predictive entropy, float32[N] each."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    p_target = p.gather(1, targets.unsqueeze(1)).squeeze(1)
    # ‖p − e_y‖² = Σp² − 2p_y + 1, clamped: rounding can make it slightly negative when p ≈ e_y
    el2n = ((p * p).sum(-1) - 2 * p_target + 1).clamp_min(0).sqrt()
    entropy = -(p * logp).sum(-1)
    nll = -logp.gather(1, targets.unsqueeze(1)).squeeze(1)
    return {"nll": nll, "el2n": el2n, "entropy": entropy}
