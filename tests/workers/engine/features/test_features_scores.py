"""Each score against a direct computation from its formula (§2 step 2)."""
import math

import numpy as np
import pytest
import torch

from tests.workers.engine.features.helpers import loop_gradients, mixed_samples
from workers.engine.features import FeatureConfig, compute_features
from workers.engine.features.scores import token_scores
from workers.engine.models import IGNORE_INDEX, collate, encode_sample


def test_token_scores_on_a_hand_checked_example():
    # logits (0, ln 3) -> p = (1/4, 3/4); target 1.
    logits = torch.tensor([[0.0, math.log(3.0)]])
    out = token_scores(logits, torch.tensor([1]))
    assert out["nll"].item() == pytest.approx(-math.log(0.75), rel=1e-6)
    assert out["el2n"].item() == pytest.approx(math.sqrt(0.25**2 + 0.25**2), rel=1e-6)  # ‖(¼, ¾) − (0, 1)‖
    assert out["entropy"].item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), rel=1e-6)
    # a confident correct prediction: EL2N and entropy near 0 and never NaN
    sure = token_scores(torch.tensor([[50.0, 0.0, 0.0]]), torch.tensor([0]))
    assert sure["el2n"].item() == pytest.approx(0.0, abs=1e-6) and sure["entropy"].item() == pytest.approx(0.0, abs=1e-6)


def _direct_scores(loaded, sample):
    """Scores from HF's full forward, token by token in float64, straight from the formulas."""
    with torch.no_grad():
        enc = encode_sample(loaded, sample)
        batch = collate([enc], loaded.tokenizer.pad_token_id)
        logits = loaded.hf_model(**batch.model_inputs()).logits[0].double()
        nll, el2n, ent = [], [], []
        for t in range(1, len(enc.labels)):
            y = int(enc.labels[t])
            if y == IGNORE_INDEX:
                continue
            p = torch.softmax(logits[t - 1], dim=-1)
            onehot = torch.zeros_like(p)
            onehot[y] = 1
            nll.append(-math.log(p[y]))
            el2n.append(float(torch.linalg.vector_norm(p - onehot)))
            ent.append(float(-(p * p.log()).sum()))
        scores = {"ppl": math.exp(np.mean(nll)), "el2n": np.mean(el2n), "entropy": np.mean(ent)}
        if enc.pixel_values is not None:
            text = encode_sample(loaded, sample, text_only=True)
            tb = collate([text], loaded.tokenizer.pad_token_id)
            text_loss = loaded.hf_model(**tb.model_inputs(), labels=tb.labels).loss.item()
            scores["ig"] = math.exp(text_loss) / scores["ppl"]  # ppl(text only) / ppl(image + text)
        else:
            scores["ig"] = math.nan
    return scores


def test_scores_equal_their_formulas(tiny_llava_nonzero, image_dir):
    loaded = tiny_llava_nonzero
    samples = mixed_samples(image_dir)
    got = compute_features(loaded, samples, FeatureConfig(proj_dim=32, batch_size=3))
    grand = loop_gradients(loaded, samples, [loaded.num_layers - 1]).norm(dim=1).numpy()
    for i, s in enumerate(samples):
        want = _direct_scores(loaded, s)
        for name in ("ppl", "el2n", "entropy", "ig"):
            if math.isnan(want[name]):
                assert math.isnan(got.scores[name][i]), (s.id, name)
            else:
                assert got.scores[name][i] == pytest.approx(want[name], rel=1e-4), (s.id, name)
        assert got.scores["grand"][i] == pytest.approx(grand[i], rel=1e-4)
    assert math.isnan(got.scores["ig"][1]) and math.isnan(got.scores["ig"][4])  # the text-only samples
    assert all(np.isfinite(got.scores["ig"][[0, 2, 3]]))


def test_causal_lm_has_no_image_grounding(tiny_causal_lm_nonzero, image_dir):
    got = compute_features(tiny_causal_lm_nonzero, mixed_samples(image_dir), FeatureConfig(proj_dim=32))
    assert np.isnan(got.scores["ig"]).all()
    assert all(np.isfinite(got.scores[k]).all() for k in ("ppl", "el2n", "entropy", "grand"))
