"""Debian's Tux Paint stamps as captioned images: stage-1 captions for `smol-llava`, and the
real-image benchmark's `tux` skill.

A stamp is a PNG cut-out with a `.txt` beside it whose first line is its English caption ("A
koala."). `is_alignment_stamp` splits them in two fixed halves by path: stage-1 alignment uses
one, the benchmark the other. The split is by file, not by object: 48 of the 644 distinct captions
(a frog, an orange) name stamps on both sides.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")
CAPTION_PROMPT = "<image>\nWhat is in the picture?"


def is_alignment_stamp(relative_path: str) -> bool:
    """A fixed half of the stamps, by a hash of their path under the stamps directory."""
    return hashlib.sha256(relative_path.encode()).digest()[0] % 2 == 0


def stamp_caption(png: Path) -> str | None:
    """The English caption beside a stamp (the first line of its .txt), or None."""
    txt = png.with_suffix(".txt")
    if not txt.is_file():
        return None
    lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
    first = lines[0].strip() if lines else ""
    return first if first and "=" not in first else None


def tuxpaint_stamps(root: Path = TUXPAINT_STAMPS) -> list[tuple[Path, str, str]]:
    """(png, caption, category) for every captioned PNG stamp, sorted by path."""
    if not root.is_dir():
        raise FileNotFoundError(f"no Tux Paint stamps at {root}: apt-get install tuxpaint-stamps-default "
                                "(make bench-data installs it)")
    out = []
    for png in sorted(root.rglob("*.png")):
        caption = stamp_caption(png)
        if caption is not None:
            out.append((png, caption, png.relative_to(root).parts[0]))
    return out


def stamp_on_white(png: Path, side: int = 224) -> Any:
    """A stamp (a cut-out with transparency) flattened onto white and fitted into a side x side square."""
    from PIL import Image

    with Image.open(png) as im:
        im = im.convert("RGBA")
        im.thumbnail((side, side))
        canvas = Image.new("RGBA", (side, side), (255, 255, 255, 255))
        canvas.alpha_composite(im, ((side - im.width) // 2, (side - im.height) // 2))
    return canvas.convert("RGB")


def caption_samples(workdir: Path, root: Path = TUXPAINT_STAMPS) -> list[Any]:
    """The alignment stamps as image-caption `EngineSample`s (images rendered into `workdir`)."""
    from core.samples import EngineSample, Message

    samples = []
    for i, (png, caption, _) in enumerate(tuxpaint_stamps(root)):
        if not is_alignment_stamp(str(png.relative_to(root))):
            continue
        image = workdir / f"{i}.png"
        stamp_on_white(png).save(image)
        samples.append(EngineSample(i, (Message("user", CAPTION_PROMPT), Message("assistant", caption)), (image,)))
    return samples
