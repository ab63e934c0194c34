import math

import pytest
import torch
from PIL import Image

from core.samples import IMAGE_TOKEN, EngineSample, Message
from workers.engine.evaluation import (
    EvalSet,
    _prompt_of,
    evaluate,
    generate_answers,
    is_short_answer,
    normalize_answer,
)
from workers.engine.models import IGNORE_INDEX, ModelSpec, encode_sample, load_model

# Float32 on CPU; batched vs unbatched and reference vs fast path differ only by summation order.
TOL = 1e-4


@pytest.fixture(scope="module")
def llava():
    return load_model(ModelSpec("tiny-llava", model_type="llava", device="cpu"))


@pytest.fixture(scope="module")
def causal():
    return load_model(ModelSpec("tiny-causal-lm", model_type="causal-lm", device="cpu"))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("img")
    paths = []
    for i, color in enumerate([(220, 40, 40), (40, 70, 220), (40, 170, 60)]):
        p = d / f"{i}.png"
        Image.new("RGB", (32 + 8 * i, 32), color).save(p)
        paths.append(p)
    return paths


def _sample(i, question, answer, image=None, system=None):
    msgs = [Message("system", system)] if system else []
    if image is None:
        msgs += [Message("user", question), Message("assistant", answer)]
        return EngineSample(i, tuple(msgs))
    msgs += [Message("user", f"{IMAGE_TOKEN}\n{question}"), Message("assistant", answer)]
    return EngineSample(i, tuple(msgs), (image,))


def _mixed(images, answers=("red", "blue", "green", "7")):
    return [
        _sample(1, "What colour is it?", answers[0], images[0]),
        _sample(2, "Which colour?", answers[1], images[1], system="Answer briefly."),
        _sample(3, "Colour of the picture?", answers[2], images[2]),
        _sample(4, "What is 3 + 4? Answer with a number please.", answers[3]),
    ]


def _slow_loss(loaded, sample):
    enc = encode_sample(loaded, sample)
    kw = {} if enc.pixel_values is None else {"pixel_values": enc.pixel_values.to(loaded.dtype)}
    with torch.no_grad():
        logits = loaded.model(input_ids=enc.input_ids[None], **kw).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    terms = [-logp[t - 1, enc.labels[t]].item() for t in range(1, len(enc.labels)) if enc.labels[t] != IGNORE_INDEX]
    return sum(terms) / len(terms)


def _slow_greedy(loaded, sample, max_new_tokens):
    """No cache, no padding, one token at a time."""
    prompt = _prompt_of(encode_sample(loaded, sample))
    ids = prompt.input_ids[None]
    kw = {} if prompt.pixel_values is None else {"pixel_values": prompt.pixel_values.to(loaded.dtype)}
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            nxt = int(loaded.model(input_ids=ids, **kw).logits[0, -1].argmax())
            if nxt == loaded.tokenizer.eos_token_id:
                break
            new.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return loaded.tokenizer.decode(new, skip_special_tokens=True)


def test_normalize_and_short_answers():
    assert normalize_answer("  Red.  ") == "red"
    assert normalize_answer('"Top!"') == "top"
    assert normalize_answer("Big\n dog?!") == "big dog"
    assert normalize_answer("3.5") == "3.5"
    assert is_short_answer("the red one", 3) and not is_short_answer("a b c d", 3)
    assert not is_short_answer(" . ", 3)


def test_prompt_is_everything_before_the_last_answer(llava, images):
    s = _sample(1, "What colour is it?", "red", images[0])
    enc = encode_sample(llava, s)
    prompt = _prompt_of(enc)
    n = len(prompt.input_ids)
    assert torch.equal(enc.input_ids[:n], prompt.input_ids)
    assert (enc.labels[:n] == IGNORE_INDEX).all() and (enc.labels[n:] != IGNORE_INDEX).any()
    assert llava.tokenizer.decode(enc.input_ids[n:], skip_special_tokens=True) == "red"


@pytest.mark.parametrize("model_name", ["llava", "causal"])
def test_loss_matches_a_slow_reference_and_batching(model_name, request, images):
    loaded = request.getfixturevalue(model_name)
    samples = _mixed(images)
    res = evaluate(loaded, [EvalSet("colours", "color", samples[:3]), EvalSet("maths", "arithmetic", samples[3:])],
                   max_new_tokens=4, batch_size=3)
    expected_colour = sum(_slow_loss(loaded, s) for s in samples[:3]) / 3
    assert res["color"]["loss"] == pytest.approx(expected_colour, abs=TOL)
    assert res["arithmetic"]["loss"] == pytest.approx(_slow_loss(loaded, samples[3]), abs=TOL)
    assert res["color"]["n"] == 3 and res["arithmetic"]["n"] == 1
    one = evaluate(loaded, [EvalSet("colours", "color", samples[:3])], max_new_tokens=4, batch_size=1)
    assert one["color"]["loss"] == pytest.approx(res["color"]["loss"], abs=TOL)
    assert one["color"]["accuracy"] == res["color"]["accuracy"]


@pytest.mark.parametrize("model_name", ["llava", "causal"])
def test_exact_match_against_slow_greedy_generation(model_name, request, images):
    loaded = request.getfixturevalue(model_name)
    samples = _mixed(images)
    slow = [_slow_greedy(loaded, s, 6) for s in samples]
    prompts = [_prompt_of(encode_sample(loaded, s)) for s in samples]
    with torch.inference_mode():
        assert generate_answers(loaded, prompts, 6, batch_size=4) == slow

    # References set to what the model generates score 1; a wrong reference scores 0.
    usable = [k for k, a in enumerate(slow) if is_short_answer(a, 3)]
    assert usable, slow
    right = [
        EngineSample(10 + k, samples[k].messages[:-1] + (Message("assistant", slow[k] + "."),), samples[k].images)
        for k in usable
    ]
    wrong = [_sample(20, "What colour is it?", "zzz-not-generated", images[0])]
    res = evaluate(loaded, [EvalSet("r", "right", right), EvalSet("w", "wrong", wrong)], max_new_tokens=6)
    assert res["right"]["accuracy"] == 1.0 and res["right"]["n_scored"] == len(right)
    assert res["wrong"]["accuracy"] == 0.0


def test_long_answers_get_loss_only_and_mode_is_restored(llava, images):
    long = [_sample(1, "Describe the picture.", "a red square on a plain red background", images[0])]
    llava.model.train()
    try:
        res = evaluate(llava, [EvalSet("captions", "caption", long)], max_new_tokens=4)
        assert llava.model.training
    finally:
        llava.model.eval()
    assert res["caption"]["accuracy"] is None and res["caption"]["n_scored"] == 0
    assert math.isfinite(res["caption"]["loss"]) and res["caption"]["loss"] > 0


def test_bad_arguments_are_rejected(llava, images):
    with pytest.raises(ValueError, match="samples"):
        EvalSet("empty", "color", [])
    with pytest.raises(ValueError, match="skill"):
        EvalSet("x", "", _mixed(images)[:1])
    with pytest.raises(ValueError, match="batch_size"):
        evaluate(llava, [EvalSet("x", "color", _mixed(images)[:1])], batch_size=0)


@pytest.mark.parametrize("model_name", ["llava", "causal"])
def test_a_batch_padded_past_the_token_budget_runs_as_micro_batches_with_the_same_results(
        model_name, request, images, monkeypatch):
    from workers.engine import evaluation

    loaded = request.getfixturevalue(model_name)
    samples = _mixed(images) + [_sample(9, "Say it at length. " * 12, "a long answer " * 15)]
    longest = max(len(encode_sample(loaded, s).input_ids) for s in samples)
    whole = evaluate(loaded, [EvalSet("m", "mixed", samples)], max_new_tokens=4, batch_size=8, token_budget=None)
    seen, token_groups = [], evaluation.token_groups

    def spy(lengths, budget):
        seen.append(token_groups(lengths, budget))
        return seen[-1]

    monkeypatch.setattr(evaluation, "token_groups", spy)
    split = evaluate(loaded, [EvalSet("m", "mixed", samples)], max_new_tokens=4, batch_size=8, token_budget=longest)
    assert len(seen[0]) > 1  # the losses' batch: 5 padded to the longest do not fit one sample's length
    assert split["mixed"]["loss"] == pytest.approx(whole["mixed"]["loss"], abs=TOL)
    assert split["mixed"]["accuracy"] == whole["mixed"]["accuracy"]
