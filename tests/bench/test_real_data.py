"""The real-image benchmark's data (bench/real_data.py), built from the installed Debian and PyPI
sources. Skipped, with the command that installs them, where `make bench-data` has not run."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.real_data import FASHION, SCHEDULE, TEXT_ONLY, WORDNET, RealBenchConfig, build_real_bench
from workers.engine.models.stamps import TUXPAINT_STAMPS

pytestmark = pytest.mark.skipif(
    not (FASHION.is_dir() and TUXPAINT_STAMPS.is_dir() and WORDNET.is_dir()),
    reason="the benchmark's Debian sources are not installed: make bench-data",
)
SMALL = RealBenchConfig(seed=5, scenes_per_dataset=10, max_copies=3, eval_per_skill=20, rare_fraction=0.1)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("real")
    return out, build_real_bench(SMALL, out)


def _images(path: Path) -> dict[str, Image.Image]:
    with tarfile.open(path) as tar:
        return {m.name: Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB") for m in tar.getmembers()}


def _pixels(im: Image.Image) -> str:
    return hashlib.sha256(np.asarray(im).tobytes()).hexdigest()


def test_schedule_skills_and_rare_share(built: tuple[Path, dict]) -> None:
    out, manifest = built
    assert manifest["skills"] == ["clothing", "vqa", "tux", "define", "digit"]
    assert [[e["skill"] for e in r] for r in manifest["rounds"]] == [sorted(r, key=lambda s: s == "digit") for r in SCHEDULE]
    for entries in manifest["rounds"]:
        sizes = {e["skill"]: e["n"] for e in entries}
        if "digit" in sizes:
            assert 1 <= sizes["digit"] <= SMALL.rare_fraction * sum(sizes.values())
    assert [e["n"] for e in manifest["eval"]] == [20] * 5


def test_records_answer_in_a_few_words_and_text_only_has_no_image(built: tuple[Path, dict]) -> None:
    out, manifest = built
    for entries, folder in [(r, f"round{t + 1}") for t, r in enumerate(manifest["rounds"])] + [(manifest["eval"], "eval")]:
        for e in entries:
            records = json.loads((out / folder / e["file"]).read_text())
            assert len(records) == e["n"] and {r["skill"] for r in records} == {e["skill"]}
            assert all(1 <= len(r["conversations"][1]["value"].split()) <= 2 for r in records)
            if e["skill"] in TEXT_ONLY:
                assert "images" not in e and all("image" not in r and "<image>" not in r["conversations"][0]["value"]
                                                  for r in records)
            else:
                names = set(_images(out / folder / e["images"]))
                assert {r["image"] for r in records} == names


def test_training_holds_near_duplicates_and_eval_images_are_never_trained_on(built: tuple[Path, dict]) -> None:
    out, manifest = built
    eval_pixels = {e["skill"]: {_pixels(im) for im in _images(out / "eval" / e["images"]).values()}
                   for e in manifest["eval"] if "images" in e}
    copies = 0
    for t, entries in enumerate(manifest["rounds"]):
        for e in (e for e in entries if "images" in e):
            images = _images(out / f"round{t + 1}" / e["images"])
            originals = {n: im for n, im in images.items() if n.endswith(".png")}
            assert not {_pixels(im) for im in originals.values()} & eval_pixels[e["skill"]]
            for name, im in images.items():
                if name.endswith(".jpg"):  # a shifted, re-encoded copy of its scene's original
                    original = np.asarray(originals[name.rsplit("-", 1)[0] + "-0.png"], dtype=np.float64)
                    assert 0 < np.abs(np.asarray(im, dtype=np.float64) - original).mean() < 40
                    copies += 1
    assert copies > 0


def test_the_build_is_deterministic(built: tuple[Path, dict], tmp_path: Path) -> None:
    out, manifest = built
    again = build_real_bench(SMALL, tmp_path)
    assert again == manifest
    first = manifest["rounds"][1][0]
    assert (tmp_path / "round2" / first["file"]).read_bytes() == (out / "round2" / first["file"]).read_bytes()
