"""Image grounding on a tiny model trained so that its answer depends on the image."""
import numpy as np
import pytest

from tests.workers.engine.features.helpers import conversation
from workers.engine.features import FeatureConfig, compute_features
from workers.engine.models import ALL_LINEAR, LoraSpec, ModelSpec, load_model
from workers.engine.training import TrainConfig, train_lora

COLOURS = ("red", "blue", "green")


@pytest.fixture(scope="module")
def colour_model(image_dir):
    """tiny-llava + LoRA trained to name the colour of a solid image (~2 s on one core)."""
    loaded = load_model(
        ModelSpec("tiny-llava", model_type="llava"),
        lora=LoraSpec(target_modules=ALL_LINEAR),
    )
    samples = [conversation(i, "<image>\nColour?", c, [image_dir / f"{c}.png"]) for i, c in enumerate(COLOURS * 4)]
    stats = train_lora(loaded, samples, TrainConfig(epochs=30, lr=1e-2, batch_size=6, max_steps=60, seed=0))
    assert stats.loss_last < 0.5 * stats.loss_first
    return loaded


def test_ig_above_one_when_the_answer_needs_the_image_and_null_for_text_only(colour_model, image_dir):
    samples = [conversation(100 + i, "<image>\nColour?", c, [image_dir / f"{c}.png"]) for i, c in enumerate(COLOURS)]
    samples.append(conversation(200, "Colour?", "red"))
    out = compute_features(colour_model, samples, FeatureConfig(proj_dim=32))
    ig = out.scores["ig"]
    # Without the image the model can at best guess: it may still bet on one colour (that sample's
    # ratio is then about 1), never on two, so the other two ratios and the geometric mean are well
    # above 1. (Asking all three to exceed 1.5 failed with transformers 5.24, ig = [17.1, 1.04, 11.8].)
    assert (ig[:3] > 0.9).all() and (ig[:3] > 1.5).sum() >= 2, ig
    assert np.exp(np.log(ig[:3]).mean()) > 1.5, ig
    assert np.isnan(ig[3])
