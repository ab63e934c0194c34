import json
import re
from collections import defaultdict

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from bench.lifelong_data import (
    BACKGROUND,
    DIGIT_SEGMENTS,
    PALETTE,
    BenchConfig,
    build_lifelong_bench,
    digit_segment_lines,
    write_lifelong_bench,
)

SMALL = BenchConfig(seed=3, scenes_per_dataset=8, max_copies=4, eval_per_skill=6)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return build_lifelong_bench(SMALL, tmp_path_factory.mktemp("bench"))


def _all_items(b):
    return [it for r in b.rounds for d in r for it in d.items] + [it for v in b.eval_sets.values() for it in v]


def _pixels(item):
    return np.asarray(Image.open(item.sample.images[0]).convert("RGB"), dtype=int)


def _foreground(img):
    # Jitter is at most 3 levels per channel; every drawn colour is > 30 levels from the background.
    return np.abs(img - np.array(BACKGROUND)).max(axis=2) > 30


def test_build_is_deterministic(tmp_path):
    a = build_lifelong_bench(SMALL, tmp_path / "a")
    b = build_lifelong_bench(SMALL, tmp_path / "b")
    write_lifelong_bench(a, tmp_path / "a")
    write_lifelong_bench(b, tmp_path / "b")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) > 100
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    other = build_lifelong_bench(BenchConfig(seed=4, scenes_per_dataset=8, max_copies=4, eval_per_skill=6), tmp_path / "c")
    assert [it.answer for it in _all_items(other)] != [it.answer for it in _all_items(a)]


def test_answers_follow_from_the_image(bench):
    s = SMALL.image_size
    checked = defaultdict(int)
    for it in _all_items(bench):
        if it.skill == "arithmetic":
            a, b = (int(v) for v in re.findall(r"\d+", it.sample.messages[0].content))
            assert int(it.answer) == a + b and not it.sample.images
            checked[it.skill] += 1
            continue
        img = _pixels(it)
        fg = _foreground(img)
        if it.skill == "color":
            (_, _, (x0, y0, x1, y1)), = it.scene["objects"]
            centre = img[(y0 + y1) // 2, (x0 + x1) // 2]
            assert np.abs(centre - np.array(PALETTE[it.answer])).max() <= SMALL.jitter
        elif it.skill == "shape":
            (_, _, (x0, y0, x1, y1)), = it.scene["objects"]
            top_left, bottom_left = fg[y0 + 1, x0 + 1], fg[y1 - 1, x0 + 2]
            expected = {"square": (True, True), "circle": (False, False), "triangle": (False, True)}
            assert (top_left, bottom_left) == expected[it.answer], it.sample.id
        elif it.skill == "size":
            frac = fg.mean()
            assert (frac > 0.25) if it.answer == "big" else (frac < 0.08), (it.answer, frac)
        elif it.skill == "count":
            _, n = ndimage.label(fg)
            assert str(n) == it.answer
        elif it.skill == "position":
            ys, xs = np.nonzero(fg)
            cy, cx = ys.mean(), xs.mean()
            sides = [n for n, hit in (("left", cx < s / 3), ("right", cx > 2 * s / 3), ("top", cy < s / 3), ("bottom", cy > 2 * s / 3)) if hit]
            assert sides == [it.answer]
        elif it.skill == "digit":
            lines = digit_segment_lines(it.scene)
            lit = "".join(
                k for k, (x0, y0, x1, y1) in lines.items() if img[(y0 + y1) // 2, (x0 + x1) // 2].max() < 60
            )
            # Decode the digit from the pixels alone, independently of the scene's digit field.
            decoded = [d for d, segs in DIGIT_SEGMENTS.items() if sorted(segs) == sorted(lit)]
            assert decoded == [int(it.answer)]
        checked[it.skill] += 1
    assert set(checked) == {s for r in SMALL.schedule for s in r}


def test_near_duplicate_groups(bench):
    for datasets in bench.rounds:
        for ds in datasets:
            if ds.skill == SMALL.rare_skill:
                continue
            groups = defaultdict(list)
            for it in ds.items:
                groups[it.group].append(it)
            assert len(groups) == SMALL.scenes_per_dataset
            multi = [g for g in groups.values() if len(g) > 1]
            assert multi, ds.name
            for g in multi:
                assert len({it.sample.messages for it in g}) == 1  # same question, same answer
                if ds.skill != "arithmetic":
                    a, b = _pixels(g[0]), _pixels(g[1])
                    assert 0 < np.abs(a - b).max() <= 2 * SMALL.jitter


def test_rare_skill_is_rare_with_default_sizes(tmp_path):
    b = build_lifelong_bench(BenchConfig(), tmp_path)
    t = b.arrival_round("size")
    rare = next(d for d in b.rounds[t] if d.skill == "size")
    total = sum(len(d.items) for d in b.rounds[t])
    assert 2 <= len(rare.items) <= 0.05 * total
    regular = [len(d.items) for r in b.rounds for d in r if d.skill != "size"]
    assert min(regular) > 10 * len(rare.items)


def test_schedule_shape_and_eval_sets_are_held_out(bench):
    assert len(bench.rounds) >= 4 and all(1 <= len(r) <= 2 for r in bench.rounds)
    train_ids = {it.sample.id for r in bench.rounds for d in r for it in d.items}
    eval_ids = {it.sample.id for v in bench.eval_sets.values() for it in v}
    assert not train_ids & eval_ids and len(train_ids | eval_ids) == len(_all_items(bench))
    train_pairs = {d_it.sample.messages[0].content for r in bench.rounds for d in r if d.skill == "arithmetic" for d_it in d.items}
    eval_pairs = {it.sample.messages[0].content for it in bench.eval_sets["arithmetic"]}
    to_pair = lambda q: tuple(re.findall(r"\d+", q))  # noqa: E731
    assert not {to_pair(q) for q in train_pairs} & {to_pair(q) for q in eval_pairs}
    # every arithmetic eval item asks a distinct pair: no item counts twice
    assert len({to_pair(q) for q in eval_pairs}) == len(bench.eval_sets["arithmetic"])


def test_llava_json_round_trips(bench, tmp_path):
    root = bench.rounds[0][0].items[0].sample.images[0].parents[3]
    manifest = json.loads(write_lifelong_bench(bench, root).read_text())
    entry = manifest["rounds"][0][0]
    recs = json.loads((root / entry["file"]).read_text())
    assert len(recs) == entry["n"] == len(bench.rounds[0][0].items)
    first = bench.rounds[0][0].items[0]
    assert recs[0]["id"] == str(first.sample.id)
    assert (root / recs[0]["image"]).resolve() == first.sample.images[0].resolve()
    assert recs[0]["conversations"][1] == {"from": "gpt", "value": first.answer}


@pytest.mark.parametrize(
    "kwargs, field", [({"jitter": 50}, "jitter"), ({"schedule": (("color", "color"),)}, "schedule"), ({"rare_skill": "nope"}, "rare_skill")]
)
def test_config_errors_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        BenchConfig(**kwargs)
