"""The real-image lifelong benchmark's data, built only from installed packages (`make bench-data`).

Five skills, each answered in one or two words:
- `clothing`: which of Fashion-MNIST's 10 garments (Debian `dataset-fashion-mnist`);
- `tux`: what kind of thing a Tux Paint stamp shows: animal, food, plant, ... (Debian
  `tuxpaint-stamps-default`; only the stamps that `smol-llava`'s stage-1 alignment never saw);
- `digit`: which handwritten digit (scikit-learn's 8x8 digits, upscaled);
- `vqa`: shape, colour and yes/no questions about synthetic scenes (PyPI `easy-vqa`);
- `define`: which English noun a WordNet gloss defines (Debian `wordnet-base`; text-only).

They arrive over four rounds (`SCHEDULE`); `digit` is rare (at most `rare_fraction` of its round).
Training datasets hold near-duplicates: an image appears 1..`max_copies` times, each copy shifted
by up to two pixels (onto white) and re-encoded as JPEG at a random quality (70..95; the tar stores
it at 95). Eval sets are disjoint from training
images (test splits where the source has them), never duplicated. Deterministic in `RealBenchConfig`.

    python bench/real_data.py --out /tmp/real --seed 0        # LLaVA JSON + image tars + manifest
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workers.engine.models.stamps import TUXPAINT_STAMPS, is_alignment_stamp, stamp_on_white, tuxpaint_stamps

FASHION = Path("/usr/share/datasets/fashion-mnist")
WORDNET = Path("/usr/share/wordnet")
FASHION_CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TUX_KINDS = {"animals": "animal", "food": "food", "plants": "plant", "vehicles": "vehicle", "town": "building",
             "seasonal": "holiday", "symbols": "symbol", "household": "household", "clothes": "clothing",
             "space": "space", "sports": "sport", "hobbies": "hobby", "people": "person"}
PROMPTS = {
    "clothing": "<image>\nWhat piece of clothing is this? Answer in one or two words.",
    "tux": "<image>\nWhat kind of thing is this? Answer in one word.",
    "digit": "<image>\nWhich digit is written here? Answer with the word.",
    "vqa": "<image>\n{question} Answer in one word.",
    "define": "Which English noun means: {gloss}? Answer with the word.",
}
SCHEDULE: tuple[tuple[str, ...], ...] = (("clothing", "vqa"), ("tux", "define"), ("digit", "clothing"), ("vqa", "tux"))
TEXT_ONLY = frozenset({"define"})
SOURCES = {  # what `make bench-data` installs, for the error a missing one gives
    "clothing": "apt-get install dataset-fashion-mnist", "tux": "apt-get install tuxpaint-stamps-default",
    "define": "apt-get install wordnet-base", "vqa": "pip install easy-vqa", "digit": "pip install scikit-learn",
}
LICENCES = {
    "clothing": "Fashion-MNIST: MIT", "tux": "Tux Paint stamps: GPL-2+ (some CC)", "digit": "UCI digits: CC BY 4.0",
    "vqa": "easy-vqa: MIT", "define": "WordNet 3.0: WordNet licence (BSD-like)",
}


@dataclass(frozen=True)
class RealBenchConfig:
    seed: int = 0
    scenes_per_dataset: int = 48  # distinct images (or glosses) per regular training dataset
    max_copies: int = 4  # each image appears 1..max_copies times in training
    rare_skill: str = "digit"
    rare_fraction: float = 0.02
    eval_per_skill: int = 200
    image_side: int = 224

    @property
    def skills(self) -> list[str]:
        seen: list[str] = []
        for r in SCHEDULE:
            seen += [s for s in r if s not in seen]
        return seen

    def arrival_round(self, skill: str) -> int:
        return next(t for t, r in enumerate(SCHEDULE) if skill in r)


# ---- the sources: each returns (train pool, eval pool) of (image-or-None, prompt, answer) makers ----

Item = tuple[Callable[[], Image.Image] | None, str, str]


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _require(path: Path, skill: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing for skill {skill!r}: {SOURCES[skill]} (make bench-data does)")
    return path


def _gray(pixels: np.ndarray, invert: bool) -> Callable[[], Image.Image]:
    def make() -> Image.Image:
        arr = 255 - pixels if invert else pixels
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB").resize((112, 112), Image.BILINEAR)
    return make


def clothing_items() -> tuple[list[Item], list[Item]]:
    out = []
    for split in ("train", "t10k"):
        images = _idx(_require(FASHION / f"{split}-images-idx3-ubyte.gz", "clothing"))
        labels = _idx(FASHION / f"{split}-labels-idx1-ubyte.gz")
        out.append([(_gray(images[i], invert=False), PROMPTS["clothing"], FASHION_CLASSES[labels[i]]) for i in range(len(labels))])
    return out[0], out[1]


def tux_items() -> tuple[list[Item], list[Item]]:
    _require(TUXPAINT_STAMPS, "tux")
    items = []
    for png, _, category in tuxpaint_stamps():
        if category in TUX_KINDS and not is_alignment_stamp(str(png.relative_to(TUXPAINT_STAMPS))):
            items.append((lambda p=png: stamp_on_white(p), PROMPTS["tux"], TUX_KINDS[category]))
    return items, items  # no test split: the builder splits by image


def digit_items() -> tuple[list[Item], list[Item]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    items = [(_gray((d.images[i] * 255 / 16).round(), invert=True), PROMPTS["digit"], DIGIT_NAMES[d.target[i]])
             for i in range(len(d.target))]
    return items, items


def vqa_items() -> tuple[list[Item], list[Item]]:
    try:
        import easy_vqa
    except ImportError:
        raise FileNotFoundError(f"easy-vqa is not installed: {SOURCES['vqa']} (make bench-data does)") from None
    out = []
    for questions, paths in ((easy_vqa.get_train_questions(), easy_vqa.get_train_image_paths()),
                             (easy_vqa.get_test_questions(), easy_vqa.get_test_image_paths())):
        texts, answers, image_ids = questions
        out.append([(lambda p=paths[i]: Image.open(p).convert("RGB"), PROMPTS["vqa"].format(question=q), a)
                    for q, a, i in zip(texts, answers, image_ids)])
    return out[0], out[1]


def define_items() -> tuple[list[Item], list[Item]]:
    """Common single-word nouns (WordNet tag count >= 5), each with the first gloss in `data.noun`
    order of a synset it heads (file order, not WordNet's sense order)."""
    common = set()
    for line in _require(WORDNET / "index.noun", "define").read_text(errors="replace").splitlines():
        if line.startswith(" "):
            continue
        parts = line.split()
        lemma, n_ptr = parts[0], int(parts[3])
        if lemma.isalpha() and lemma.islower() and 3 <= len(lemma) <= 10 and int(parts[5 + n_ptr]) >= 5:
            common.add(lemma)
    items, used = [], set()
    for line in (WORDNET / "data.noun").read_text(errors="replace").splitlines():
        if line.startswith(" ") or "|" not in line:
            continue
        head, gloss = line.split("|", 1)
        word = head.split()[4]
        definition = gloss.split(";")[0].strip().rstrip(".")
        if word in common and word not in used and 10 <= len(definition) <= 90:
            used.add(word)
            items.append((None, PROMPTS["define"].format(gloss=definition), word))
    return items, items


SOURCES_FN: dict[str, Callable[[], tuple[list[Item], list[Item]]]] = {
    "clothing": clothing_items, "tux": tux_items, "digit": digit_items, "vqa": vqa_items, "define": define_items,
}


# ---- assembling datasets -------------------------------------------------------------------------

def _near_duplicate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The same picture shifted by up to 2 px and re-encoded as JPEG at quality 70..95."""
    dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
    shifted = Image.new("RGB", image.size, (255, 255, 255))
    shifted.paste(image, (dx, dy))
    buf = io.BytesIO()
    shifted.save(buf, "JPEG", quality=int(rng.integers(70, 96)))
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _record(rid: str, prompt: str, answer: str, image: str | None, skill: str) -> dict:
    rec = {"id": rid, "skill": skill,
           "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": answer}]}
    if image is not None:
        rec["image"] = image
    return rec


def _write_dataset(out: Path, name: str, records: list[dict], images: dict[str, Image.Image]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(records))
    entry = {"name": name, "file": f"{name}.json", "n": len(records), "skill": records[0]["skill"]}
    if images:
        with tarfile.open(out / f"{name}.tar", "w") as tar:
            for arcname, image in images.items():
                buf = io.BytesIO()
                image.save(buf, "PNG" if arcname.endswith(".png") else "JPEG", quality=95)
                info = tarfile.TarInfo(arcname)
                info.size, info.mtime = buf.tell(), 0
                buf.seek(0)
                tar.addfile(info, buf)
        entry["images"] = f"{name}.tar"
    return entry


def build_real_bench(cfg: RealBenchConfig, out: Path) -> dict:
    """Write every round's datasets and every skill's eval set under `out`; returns the manifest."""
    rng = np.random.default_rng(cfg.seed)
    pools, used_train = {}, {}
    for skill in cfg.skills:
        train, test = SOURCES_FN[skill]()
        order_test = rng.permutation(len(test))
        eval_idx = order_test[:cfg.eval_per_skill]
        if len(eval_idx) < cfg.eval_per_skill:
            raise ValueError(f"{skill}: {len(test)} items, fewer than eval_per_skill={cfg.eval_per_skill}")
        held = {int(i) for i in eval_idx} if train is test else set()
        pools[skill] = ([train[i] for i in rng.permutation(len(train)) if int(i) not in held] if train is test
                        else [train[i] for i in rng.permutation(len(train))], [test[int(i)] for i in eval_idx])
        used_train[skill] = 0
    manifest = {"config": asdict(cfg), "skills": cfg.skills, "schedule": [list(r) for r in SCHEDULE],
                "rare_skill": cfg.rare_skill, "text_only": sorted(TEXT_ONLY), "licences": LICENCES, "rounds": [], "eval": []}
    for skill in cfg.skills:
        records, images = [], {}
        for k, (make, prompt, answer) in enumerate(pools[skill][1]):
            name = None if make is None else f"{skill}-eval-{k}.png"
            if make is not None:
                images[name] = make()
            records.append(_record(f"{skill}-eval-{k}", prompt, answer, name, skill))
        manifest["eval"].append(_write_dataset(out / "eval", f"eval-{skill}", records, images))
    for t, skills in enumerate(SCHEDULE):
        entries, sizes = [], []
        for skill in sorted(skills, key=lambda s: s == cfg.rare_skill):  # the rare one last
            rare = skill == cfg.rare_skill
            # a rare dataset holds at most rare_fraction of its round: distinct images, one copy each
            n_scenes = max(1, int(cfg.rare_fraction * sum(sizes) / (1 - cfg.rare_fraction))) if rare \
                else cfg.scenes_per_dataset
            train = pools[skill][0]
            start, used_train[skill] = used_train[skill], used_train[skill] + n_scenes
            if used_train[skill] > len(train):
                raise ValueError(f"{skill}: not enough training items for round {t + 1}")
            records, images = [], {}
            for k, (make, prompt, answer) in enumerate(train[start:used_train[skill]]):
                copies = 1 if rare else int(rng.integers(1, cfg.max_copies + 1))
                base = None if make is None else make()
                for c in range(copies):
                    name = None
                    if base is not None:
                        name = f"{skill}-r{t + 1}-{k}-{c}.{'png' if c == 0 else 'jpg'}"
                        images[name] = base if c == 0 else _near_duplicate(base, rng)
                    records.append(_record(f"{skill}-r{t + 1}-{k}-{c}", prompt, answer, name, skill))
            order = rng.permutation(len(records))
            entries.append(_write_dataset(out / f"round{t + 1}", f"r{t + 1}-{skill}", [records[i] for i in order], images))
            sizes.append(len(records))
        manifest["rounds"].append(entries)
        if cfg.rare_skill in skills:
            share = sizes[-1] / sum(sizes)
            if share > cfg.rare_fraction:
                raise ValueError(f"rare skill {cfg.rare_skill} is {share:.3f} of round {t + 1}, above {cfg.rare_fraction}")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenes", type=int, default=RealBenchConfig.scenes_per_dataset)
    p.add_argument("--eval-per-skill", type=int, default=RealBenchConfig.eval_per_skill)
    args = p.parse_args(argv)
    cfg = RealBenchConfig(seed=args.seed, scenes_per_dataset=args.scenes, eval_per_skill=args.eval_per_skill)
    manifest = build_real_bench(cfg, args.out)
    for t, entries in enumerate(manifest["rounds"]):
        print(f"round {t + 1}: " + ", ".join(f"{e['name']} ({e['n']})" for e in entries))
    print("eval: " + ", ".join(f"{e['name']} ({e['n']})" for e in manifest["eval"]))


if __name__ == "__main__":
    main()
