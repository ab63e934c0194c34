import pytest
import torch

from core.samples import EngineSample, Message
from workers.engine.models import IGNORE_INDEX, encode_sample, strip_image_tokens

N_IMAGE_TOKENS = 16  # tiny-llava: (56 / 14)^2 patches, CLS dropped


def _decode(loaded, ids) -> str:
    return loaded.tokenizer.decode(ids)


def test_labels_cover_exactly_the_assistant_turns(tiny_llava):
    sample = EngineSample(1, (
        Message("system", "Be brief."),
        Message("user", "Hi?"),
        Message("assistant", "Hello."),
        Message("user", "Bye?"),
        Message("assistant", "Bye!"),
    ))
    enc = encode_sample(tiny_llava, sample)
    supervised = enc.labels != IGNORE_INDEX
    assert torch.equal(enc.labels[supervised], enc.input_ids[supervised])
    # the supervised span is two contiguous runs: each response and its end-of-turn token
    runs = _decode(tiny_llava, enc.input_ids[supervised])
    assert runs == "Hello.</s>Bye!</s>"
    assert _decode(tiny_llava, enc.input_ids) == (
        "<s>Be brief.\nUSER: Hi?\nASSISTANT: Hello.</s>USER: Bye?\nASSISTANT: Bye!</s>"
    )
    assert enc.pixel_values is None


def test_image_placeholders_expand_to_the_processor_image_tokens(tiny_llava, image_dir):
    sample = EngineSample(2, (Message("user", "<image>\nColour?"), Message("assistant", "red")), (image_dir / "red.png",))
    enc = encode_sample(tiny_llava, sample)
    image_id = tiny_llava.processor.image_token_id
    assert int((enc.input_ids == image_id).sum()) == N_IMAGE_TOKENS
    assert enc.pixel_values.shape == (1, 3, 56, 56)
    assert _decode(tiny_llava, enc.labels[enc.labels != IGNORE_INDEX]) == "red</s>"
    # the processor's own pixels for this image
    from PIL import Image

    ref = tiny_llava.processor.image_processor(Image.open(image_dir / "red.png").convert("RGB"), return_tensors="pt")
    assert torch.equal(enc.pixel_values, ref["pixel_values"])


def test_multi_image_sample_keeps_all_images_in_order(tiny_llava, image_dir):
    sample = EngineSample(3, (
        Message("user", "<image> then <image>: same?"), Message("assistant", "no"),
    ), (image_dir / "red.png", image_dir / "blue.png"))
    enc = encode_sample(tiny_llava, sample)
    assert enc.pixel_values.shape[0] == 2
    assert not torch.equal(enc.pixel_values[0], enc.pixel_values[1])
    assert int((enc.input_ids == tiny_llava.processor.image_token_id).sum()) == 2 * N_IMAGE_TOKENS


def test_text_only_removes_image_tokens_and_keeps_the_response(tiny_llava, image_dir):
    sample = EngineSample(4, (Message("user", "<image>\nColour?"), Message("assistant", "blue")), (image_dir / "blue.png",))
    full, text = encode_sample(tiny_llava, sample), encode_sample(tiny_llava, sample, text_only=True)
    assert text.pixel_values is None
    assert tiny_llava.processor.image_token_id not in text.input_ids.tolist()
    assert _decode(tiny_llava, text.input_ids) == "<s>USER: Colour?\nASSISTANT: blue</s>"
    assert torch.equal(full.labels[full.labels != IGNORE_INDEX], text.labels[text.labels != IGNORE_INDEX])
    assert strip_image_tokens("<image>\nA <image> B") == "A  B"


def test_causal_lm_encodes_images_as_text_only(tiny_causal_lm, image_dir):
    sample = EngineSample(5, (Message("user", "<image>\nColour?"), Message("assistant", "red")), (image_dir / "red.png",))
    enc = encode_sample(tiny_causal_lm, sample)
    assert enc.pixel_values is None
    assert _decode(tiny_causal_lm, enc.input_ids) == "<s>USER: Colour?\nASSISTANT: red</s>"


def test_max_length_truncates_and_rejects_what_it_cannot_keep(tiny_llava, image_dir):
    sample = EngineSample(6, (Message("user", "Q?"), Message("assistant", "a long answer")))
    enc = encode_sample(tiny_llava, sample, max_length=25)
    assert len(enc.input_ids) == 25 and enc.n_response > 0
    with pytest.raises(ValueError, match="no assistant-response tokens"):
        encode_sample(tiny_llava, sample, max_length=8)
    with_image = EngineSample(7, (Message("user", "<image>\nQ?"), Message("assistant", "a")), (image_dir / "red.png",))
    with pytest.raises(ValueError, match="cut an image"):
        encode_sample(tiny_llava, with_image, max_length=10)


def test_fallback_format_without_a_chat_template(tiny_causal_lm):
    from workers.engine.models.encoding import chat_segments

    segments = chat_segments(tiny_causal_lm.tokenizer, None, [("user", "Q"), ("assistant", "A")])
    assert segments == [("USER: Q\nASSISTANT: ", False), ("A</s>", True)]
