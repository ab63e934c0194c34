"""A procedurally generated multimodal lifelong benchmark (pure PIL + numpy, no downloads).

Seven skills, each answered in one or two words: six read the image (`color`, `shape`, `count`,
`position`, `size`, `digit`), `arithmetic` is text-only. The datasets arrive over rounds
(`DEFAULT_SCHEDULE`); one skill (`size`) is rare: a few samples, ~4% of its round. Training datasets
are heavily near-duplicated on purpose (one scene re-rendered with fresh pixel noise and the same
question, 1..`max_copies` times) so that pruning and dedup have something to find. Held-out eval
sets use scenes drawn from a separate random stream and are never duplicated.

Everything is a deterministic function of `BenchConfig`: the same config gives byte-identical
images and JSON.

    python bench/lifelong_data.py --out /tmp/lifelong --seed 0   # writes LLaVA JSON + PNGs
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.samples import IMAGE_TOKEN, EngineSample, Message

BACKGROUND = (200, 200, 200)
PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("left", "right", "top", "bottom")
# Seven-segment layout: segment -> (x0, y0, x1, y1) in a unit box 1 wide, 2 tall.
SEGMENTS = {
    "a": (0, 0, 1, 0), "b": (1, 0, 1, 1), "c": (1, 1, 1, 2), "d": (0, 2, 1, 2),
    "e": (0, 1, 0, 2), "f": (0, 0, 0, 1), "g": (0, 1, 1, 1),
}
DIGIT_SEGMENTS = {
    0: "abcdef", 1: "bc", 2: "abdeg", 3: "abcdg", 4: "bcfg",
    5: "acdfg", 6: "acdefg", 7: "abc", 8: "abcdefg", 9: "abcdfg",
}
TEMPLATES = {
    "color": ("What colour is the square?", "Which color is the square?", "Name the colour of the square."),
    "shape": ("What shape is shown?", "Which shape is in the picture?", "Name the shape."),
    "count": ("How many circles are there?", "Count the circles.", "How many dots do you see?"),
    "position": ("Where is the dot?", "On which side is the dot?", "Where is the circle placed?"),
    "size": ("Is the shape big or small?", "Is the object large or small? Say big or small.", "Big or small?"),
    "digit": ("Which digit is drawn?", "What number is shown?", "Read the digit."),
    "arithmetic": ("What is {a} + {b}?", "Compute {a} plus {b}.", "{a} + {b} = ?"),
}
DEFAULT_SCHEDULE: tuple[tuple[str, ...], ...] = (
    ("color", "shape"),
    ("count", "arithmetic"),
    ("position", "size"),
    ("digit",),
)
TEXT_ONLY_SKILLS = frozenset({"arithmetic"})


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of the benchmark; the defaults make ~100 training samples per regular dataset."""

    seed: int = 0
    image_size: int = 56  # the tiny-llava processor input side: no resampling blur
    scenes_per_dataset: int = 24  # distinct scenes in a regular training dataset
    max_copies: int = 8  # each scene appears 1..max_copies times (near-duplicates)
    jitter: int = 3  # per-pixel noise amplitude of a near-duplicate copy, in 0..255 levels
    rare_skill: str = "size"
    rare_fraction: float = 0.04  # rare dataset size relative to the rest of its round
    eval_per_skill: int = 24
    max_operand: int = 19  # arithmetic operands are 0..max_operand; eval pairs never occur in training
    schedule: tuple[tuple[str, ...], ...] = DEFAULT_SCHEDULE

    def __post_init__(self) -> None:
        checks = {
            "image_size": self.image_size >= 16,
            "scenes_per_dataset": self.scenes_per_dataset >= 1,
            "max_copies": self.max_copies >= 1,
            "jitter": 0 <= self.jitter <= 20,
            "rare_fraction": 0 < self.rare_fraction < 0.5,
            "eval_per_skill": self.eval_per_skill >= 1,
            "max_operand": 1 <= self.max_operand <= 99,
            "schedule": len(self.schedule) >= 1 and all(len(r) >= 1 for r in self.schedule),
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"BenchConfig.{name} is invalid: {getattr(self, name)!r}")
        skills = self.skills
        unknown = sorted(set(skills) - set(TEMPLATES))
        if unknown or len(set(skills)) != len(skills):
            raise ValueError(f"BenchConfig.schedule must name each known skill once, got {self.schedule!r}")
        if self.rare_skill not in skills:
            raise ValueError(f"BenchConfig.rare_skill {self.rare_skill!r} is not in the schedule")


    @property
    def skills(self) -> list[str]:
        """Every skill, in arrival order."""
        return [s for r in self.schedule for s in r]

    def arrival_round(self, skill: str) -> int:
        """The 0-based round whose datasets first hold `skill`."""
        return next(t for t, r in enumerate(self.schedule) if skill in r)


@dataclass(frozen=True)
class BenchItem:
    """A sample with what generated it: `scene` holds the drawing parameters, `group` the near-dup group."""

    sample: EngineSample
    skill: str
    answer: str
    group: int
    scene: dict


@dataclass
class SkillDataset:
    name: str
    skill: str
    round: int
    items: list[BenchItem] = field(default_factory=list)

    @property
    def samples(self) -> list[EngineSample]:
        return [it.sample for it in self.items]


@dataclass
class LifelongBench:
    config: BenchConfig
    rounds: list[list[SkillDataset]]
    eval_sets: dict[str, list[BenchItem]]  # skill -> held-out items, in arrival order of skills

    def arrival_round(self, skill: str) -> int:
        return self.config.arrival_round(skill)  # the rounds follow the schedule


# ---- scenes: rng -> (answer, scene params); render: scene -> image ---------------------------------

def _scene_color(rng: np.random.Generator, s: int) -> tuple[str, dict]:
    name = str(rng.choice(list(PALETTE)))
    side = int(rng.integers(s // 3, s // 2 + 1))
    x, y = (int(v) for v in rng.integers(1, s - side, size=2))
    return name, {"objects": [("square", PALETTE[name], (x, y, x + side, y + side))]}


def _scene_shape(rng: np.random.Generator, s: int) -> tuple[str, dict]:
    shape = str(rng.choice(SHAPES))
    side = int(rng.integers(s // 2, 3 * s // 4 + 1))
    x, y = (int(v) for v in rng.integers(1, s - side, size=2))
    return shape, {"objects": [(shape, PALETTE[str(rng.choice(list(PALETTE)))], (x, y, x + side, y + side))]}


def _scene_size(rng: np.random.Generator, s: int) -> tuple[str, dict]:
    big = bool(rng.integers(2))
    lo, hi = ((6 * s) // 10, (8 * s) // 10) if big else (s // 6, s // 4)
    side = int(rng.integers(lo, hi + 1))
    x, y = (int(v) for v in rng.integers(1, s - side, size=2))
    shape = str(rng.choice(("circle", "square")))
    return ("big" if big else "small"), {"objects": [(shape, PALETTE[str(rng.choice(list(PALETTE)))], (x, y, x + side, y + side))]}


def _scene_count(rng: np.random.Generator, s: int) -> tuple[str, dict]:
    n = int(rng.integers(1, 6))
    cell = s // 3  # a 3x3 grid of cells, one circle per chosen cell: circles never touch
    r = max(2, cell // 3)
    cells = rng.choice(9, size=n, replace=False)
    objs = []
    for c in sorted(int(v) for v in cells):
        cx = (c % 3) * cell + cell // 2 + int(rng.integers(-1, 2))
        cy = (c // 3) * cell + cell // 2 + int(rng.integers(-1, 2))
        objs.append(("circle", PALETTE[str(rng.choice(list(PALETTE)))], (cx - r, cy - r, cx + r, cy + r)))
    return str(n), {"objects": objs}


def _scene_position(rng: np.random.Generator, s: int) -> tuple[str, dict]:
    where = str(rng.choice(POSITIONS))
    r = max(2, s // 8)
    near, mid = int(rng.integers(r + 1, s // 4 + 1)), int(rng.integers(3 * s // 8, 5 * s // 8 + 1))
    cx, cy = {"left": (near, mid), "right": (s - 1 - near, mid), "top": (mid, near), "bottom": (mid, s - 1 - near)}[where]
    color = PALETTE[str(rng.choice(list(PALETTE)))]
    return where, {"objects": [("circle", color, (cx - r, cy - r, cx + r, cy + r))]}


def _scene_digit(rng: np.random.Generator, s: int) -> tuple[str, dict]:
    d = int(rng.integers(10))
    w = int(rng.integers(s // 4, s // 3 + 1))
    h = 2 * w
    x, y = int(rng.integers(2, s - w - 2)), int(rng.integers(2, s - h - 2))
    return str(d), {"digit": d, "box": (x, y, w), "stroke": max(2, s // 12)}


SCENES: dict[str, Callable[[np.random.Generator, int], tuple[str, dict]]] = {
    "color": _scene_color, "shape": _scene_shape, "size": _scene_size,
    "count": _scene_count, "position": _scene_position, "digit": _scene_digit,
}


def digit_segment_lines(scene: dict) -> dict[str, tuple[int, int, int, int]]:
    """Pixel end points of the seven segments of a `digit` scene (drawn or not)."""
    x, y, w = scene["box"]
    return {k: (x + x0 * w, y + y0 * w, x + x1 * w, y + y1 * w) for k, (x0, y0, x1, y1) in SEGMENTS.items()}


def render_scene(scene: dict, size: int) -> Image.Image:
    """Draw a scene without noise; shapes are filled, digits are black seven-segment strokes."""
    img = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for shape, color, (x0, y0, x1, y1) in scene.get("objects", []):
        if shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=tuple(color))
        elif shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=tuple(color))
        else:  # triangle, apex up
            draw.polygon([((x0 + x1) // 2, y0), (x0, y1), (x1, y1)], fill=tuple(color))
    if "digit" in scene:
        lines = digit_segment_lines(scene)
        for seg in DIGIT_SEGMENTS[scene["digit"]]:
            draw.line(lines[seg], fill=(0, 0, 0), width=scene["stroke"])
    return img


def add_jitter(img: Image.Image, rng: np.random.Generator, amplitude: int) -> Image.Image:
    if amplitude == 0:
        return img
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-amplitude, amplitude + 1, size=(*img.size[::-1], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


# ---- datasets ----------------------------------------------------------------------------------------

class _Builder:
    def __init__(self, cfg: BenchConfig, out_dir: Path) -> None:
        self.cfg, self.out_dir = cfg, Path(out_dir)
        self.next_id, self.next_group = 1, 0
        self.skill_index = {s: i for i, s in enumerate(TEMPLATES)}

    def rng(self, skill: str, stream: int) -> np.random.Generator:
        # One independent stream per (seed, skill, split): adding a skill never shifts another's data.
        return np.random.default_rng([self.cfg.seed, self.skill_index[skill], stream])

    def item(self, skill: str, split: str, scene: dict | None, question: str, answer: str,
             group: int, noise: np.random.Generator) -> BenchItem:
        sid, self.next_id = self.next_id, self.next_id + 1
        if scene is None:
            sample = EngineSample(sid, (Message("user", question), Message("assistant", answer)))
        else:
            path = self.out_dir / "images" / split / skill / f"{sid}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            add_jitter(render_scene(scene, self.cfg.image_size), noise, self.cfg.jitter).save(path)
            msgs = (Message("user", f"{IMAGE_TOKEN}\n{question}"), Message("assistant", answer))
            sample = EngineSample(sid, msgs, (path,))
        return BenchItem(sample, skill, answer, group, scene or {})

    def draw(self, skill: str, rng: np.random.Generator, exclude: set) -> tuple[dict | None, str, str, tuple]:
        """A scene (None for text-only), its question and answer, and a key for text-only overlap."""
        template = TEMPLATES[skill][int(rng.integers(len(TEMPLATES[skill])))]
        if skill in TEXT_ONLY_SKILLS:
            top = self.cfg.max_operand + 1
            if len(exclude) >= top * top:
                raise ValueError(f"eval set of {skill!r} uses every operand pair; lower BenchConfig.eval_per_skill")
            while (pair := tuple(int(v) for v in rng.integers(0, top, size=2))) in exclude:
                pass
            return None, template.format(a=pair[0], b=pair[1]), str(sum(pair)), pair
        answer, scene = SCENES[skill](rng, self.cfg.image_size)
        return scene, template, answer, ()

    def eval_items(self, skill: str) -> tuple[list[BenchItem], set]:
        rng, keys, items = self.rng(skill, 1), set(), []
        for _ in range(self.cfg.eval_per_skill):
            # text-only items are drawn without replacement: every eval item is a distinct question
            scene, question, answer, key = self.draw(skill, rng, keys)
            keys.add(key)
            items.append(self.item(skill, "eval", scene, question, answer, -1, rng))
        return items, keys

    def train_dataset(self, skill: str, round_: int, n_scenes: int, max_copies: int, exclude: set) -> SkillDataset:
        rng = self.rng(skill, 0)
        ds = SkillDataset(f"r{round_}-{skill}", skill, round_)
        for _ in range(n_scenes):
            scene, question, answer, _ = self.draw(skill, rng, exclude)
            group, self.next_group = self.next_group, self.next_group + 1
            for _ in range(int(rng.integers(1, max_copies + 1))):
                ds.items.append(self.item(skill, "train", scene, question, answer, group, rng))
        order = rng.permutation(len(ds.items))
        ds.items = [ds.items[i] for i in order]
        return ds


def build_lifelong_bench(cfg: BenchConfig, out_dir: Path | str) -> LifelongBench:
    """Render every image under `out_dir/images` and return the datasets and eval sets.

    Sample ids are 1.. in generation order: eval sets first (skills in schedule order), then the
    training datasets round by round. Arithmetic eval pairs never occur in training.
    """
    b = _Builder(cfg, Path(out_dir))
    skills = cfg.skills
    eval_sets, excluded = {}, {}
    for skill in skills:
        eval_sets[skill], excluded[skill] = b.eval_items(skill)
    rounds: list[list[SkillDataset]] = []
    for t, round_skills in enumerate(cfg.schedule):
        regular = [b.train_dataset(s, t, cfg.scenes_per_dataset, cfg.max_copies, excluded[s])
                   for s in round_skills if s != cfg.rare_skill]
        datasets = list(regular)
        if cfg.rare_skill in round_skills:
            # A rare dataset relative to the rest of its round; its samples are distinct scenes.
            rest = sum(len(d.items) for d in regular) or cfg.scenes_per_dataset
            n_rare = max(2, round(cfg.rare_fraction * rest))
            datasets.append(b.train_dataset(cfg.rare_skill, t, n_rare, 1, excluded[cfg.rare_skill]))
        rounds.append(datasets)
    return LifelongBench(cfg, rounds, eval_sets)


def llava_records(items: list[BenchItem], root: Path) -> list[dict]:
    """LLaVA-format records (`id`, optional `image` relative to `root`, `conversations`)."""
    out = []
    for it in items:
        rec: dict = {"id": str(it.sample.id)}
        if it.sample.images:
            rec["image"] = it.sample.images[0].relative_to(root).as_posix()
        rec["conversations"] = [
            {"from": "human" if m.role == "user" else "gpt", "value": m.content} for m in it.sample.messages
        ]
        out.append(rec)
    return out


def write_lifelong_bench(bench: LifelongBench, out_dir: Path | str) -> Path:
    """Write one LLaVA JSON per dataset and eval set plus `manifest.json`; returns the manifest path."""
    root = Path(out_dir)
    manifest = {"config": asdict(bench.config), "rounds": [], "eval_sets": {}}
    for datasets in bench.rounds:
        entries = []
        for ds in datasets:
            (root / f"{ds.name}.json").write_text(json.dumps(llava_records(ds.items, root), indent=1))
            entries.append({"name": ds.name, "skill": ds.skill, "file": f"{ds.name}.json", "n": len(ds.items)})
        manifest["rounds"].append(entries)
    for skill, items in bench.eval_sets.items():
        (root / f"eval-{skill}.json").write_text(json.dumps(llava_records(items, root), indent=1))
        manifest["eval_sets"][skill] = {"file": f"eval-{skill}.json", "n": len(items)}
    path = root / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=56)
    args = p.parse_args(argv)
    bench = build_lifelong_bench(BenchConfig(seed=args.seed, image_size=args.image_size), args.out)
    path = write_lifelong_bench(bench, args.out)
    sizes = [{d.skill: len(d.items) for d in r} for r in bench.rounds]
    print(json.dumps({"manifest": str(path), "rounds": sizes}))


if __name__ == "__main__":
    main()
