"""Test-data builders shared by the suite: real photos, LLaVA / OpenAI-style datasets, images
archives, and each kind of hostile or broken input the ingest path must reject.

The photos are the two real ones scikit-learn ships (china.jpg, flower.jpg), downscaled so tests
stay fast. Everything is deterministic.
"""
from __future__ import annotations

import io
import json
import stat
import struct
import tarfile
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

ArchiveFormat = Literal["zip", "tar", "tar.gz"]
_MODES = ("RGB", "RGB", "L", "RGBA")  # cycled by image index: colour, grayscale and alpha photos
_FORMATS = ("JPEG", "PNG", "PNG", "PNG")
_EXT = {"JPEG": "jpg", "PNG": "png"}
_QUESTIONS = (
    "What is shown in this picture?",
    "Describe the colours you see.",
    "Is this photo taken indoors or outdoors?",
    "What would be a good caption for this?",
)
_ANSWERS = (
    "A traditional building with a curved roof.",
    "Mostly red, green and a little blue.",
    "Outdoors, in daylight.",
    "A calm scene on a sunny day.",
)


@lru_cache(maxsize=1)
def _photo_arrays() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images  # dev dependency; lazy so importing is cheap

    return tuple(load_sample_images().images)  # china, flower: (427, 640, 3) uint8


def photo(i: int = 0, size: int = 64, mode: str = "RGB") -> Image.Image:
    """A `size`x`size` crop of a real photo; different `i` give different crops (and bytes)."""
    arrays = _photo_arrays()
    arr = arrays[i % len(arrays)]
    h, w = arr.shape[:2]
    side = 200
    k = i // len(arrays)
    top, left = (k * 37) % (h - side), (k * 53) % (w - side)
    im = Image.fromarray(arr[top : top + side, left : left + side]).resize((size, size), Image.Resampling.BILINEAR)
    if mode == "RGBA":
        alpha = Image.fromarray(arrays[(i + 1) % len(arrays)][:side, :side]).convert("L").resize((size, size))
        im = im.convert("RGBA")
        im.putalpha(alpha)
        return im
    return im.convert(mode)


def encode(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buf.getvalue()


def real_photos() -> dict[str, bytes]:
    """Real photos in the variants ingest must accept: RGB JPEG and PNG, grayscale PNG and JPEG, RGBA PNG."""
    return dict(_real_photos())


@lru_cache(maxsize=1)
def _real_photos() -> tuple[tuple[str, bytes], ...]:
    def whole(which: int, mode: str) -> Image.Image:
        im = Image.fromarray(_photo_arrays()[which])
        im.thumbnail((128, 128))
        return im.convert(mode) if mode != "RGBA" else _with_alpha(im)

    return (
        ("china.jpg", encode(whole(0, "RGB"), "JPEG")),
        ("flower.png", encode(whole(1, "RGB"), "PNG")),
        ("china_gray.png", encode(whole(0, "L"), "PNG")),
        ("flower_gray.jpg", encode(whole(1, "L"), "JPEG")),
        ("flower_rgba.png", encode(whole(1, "RGBA"), "PNG")),
    )


def _with_alpha(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    w, h = rgba.size
    ramp = np.tile(np.linspace(40, 255, w, dtype=np.uint8), (h, 1))  # a left-to-right fade
    rgba.putalpha(Image.fromarray(ramp))
    return rgba


def image_name(i: int, k: int = 0, folder: str = "images") -> str:
    return f"{folder}/{i:04d}_{k}.{_EXT[_FORMATS[(i + k) % len(_FORMATS)]]}"


def image_bytes(i: int, k: int = 0) -> bytes:
    """The photo `image_name(i, k)` names: modes and formats cycle RGB JPEG, RGB PNG, L PNG, RGBA PNG."""
    j = (i + k) % len(_MODES)
    return encode(photo(i * 3 + k, mode=_MODES[j]), _FORMATS[j])


def build_records(
    n_samples: int = 8,
    *,
    with_images: bool = True,
    multi_image: bool = False,
    text_only: bool = False,
    style: Literal["llava", "openai"] = "llava",
) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """Records and the images they reference (archive member name -> bytes).

    with_images=False gives a text-only dataset. With images: text_only=True makes every third
    sample text-only, multi_image=True gives every other image sample two images.
    """
    records, images = [], {}
    for i in range(n_samples):
        n_img = 0
        if with_images and not (text_only and i % 3 == 2):
            n_img = 2 if multi_image and i % 2 == 1 else 1
        names = [image_name(i, k) for k in range(n_img)]
        for k, name in enumerate(names):
            images[name] = image_bytes(i, k)
        q, a = _QUESTIONS[i % len(_QUESTIONS)], f"{_ANSWERS[i % len(_ANSWERS)]} (sample {i})"
        records.append(llava_record(f"s{i:04d}", q, a, names) if style == "llava" else openai_record(f"s{i:04d}", q, a, names))
    return records, images


def llava_record(sample_id: Any, question: str, answer: str, images: list[str] = ()) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": sample_id}
    if len(images) == 1:
        rec["image"] = images[0]
    elif images:
        rec["image"] = list(images)
    rec["conversations"] = [
        {"from": "human", "value": "<image>\n" * len(images) + question},
        {"from": "gpt", "value": answer},
    ]
    return rec


def openai_record(sample_id: Any, question: str, answer: str, images: list[str] = ()) -> dict[str, Any]:
    parts = [{"type": "image", "image": name} for name in images] + [{"type": "text", "text": question}]
    return {
        "id": sample_id,
        "messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": answer}],
    }


def write_records(path: Path, records: list[Any], fmt: Literal["json", "jsonl"] = "json") -> Path:
    path = Path(path)
    if fmt == "json":
        path.write_text(json.dumps(records, indent=1, ensure_ascii=False), encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def write_llava_dataset(
    directory: Path,
    n_samples: int = 8,
    *,
    with_images: bool = True,
    multi_image: bool = False,
    text_only: bool = False,
    fmt: Literal["json", "jsonl"] = "json",
    style: Literal["llava", "openai"] = "llava",
    archive: ArchiveFormat = "zip",
) -> tuple[Path, Path | None]:
    """Write dataset.json(l) and (with images) images.zip/.tar/.tar.gz; return both paths.

    Options as in `build_records`; the archive is None for a text-only dataset.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    records, images = build_records(
        n_samples, with_images=with_images, multi_image=multi_image, text_only=text_only, style=style
    )
    dataset = write_records(directory / f"dataset.{fmt}", records, fmt)
    return dataset, (write_archive(directory, images, archive) if images else None)


def write_archive(directory: Path, members: dict[str, bytes], kind: ArchiveFormat = "zip") -> Path:
    if kind == "zip":
        return write_zip(directory, members)
    return write_tar(directory, members, gz=kind == "tar.gz")


def write_zip(
    directory: Path, members: dict[str, bytes], name: str = "images.zip", compression: int = zipfile.ZIP_DEFLATED
) -> Path:
    """A zip holding `members` under exactly these names (unsafe ones included: '../x', '/abs')."""
    path = Path(directory) / name
    with zipfile.ZipFile(path, "w", compression) as zf:
        for member, data in members.items():
            info = zipfile.ZipInfo(member, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = compression
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            zf.writestr(info, data)
    return path


def write_tar(directory: Path, members: dict[str, bytes], name: str | None = None, gz: bool = False) -> Path:
    """A tar (or tar.gz) holding `members` under exactly these names."""
    path = Path(directory) / (name or ("images.tar.gz" if gz else "images.tar"))
    with tarfile.open(path, "w:gz" if gz else "w") as tf:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = len(data), 0o644, 1704067200
            tf.addfile(info, io.BytesIO(data))
    return path


def write_zip_symlink(
    directory: Path, link: str = "images/link.jpg", target: str = "/etc/passwd", members: dict[str, bytes] | None = None
) -> Path:
    """A zip whose `link` member is a symbolic link to `target` (Unix mode bits, as Info-ZIP stores it)."""
    path = write_zip(directory, members or {}, name="symlink.zip")
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo(link, date_time=(2024, 1, 1, 0, 0, 0))
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, target)
    return path


def write_tar_special(
    directory: Path,
    name: str = "images/link.jpg",
    kind: bytes = tarfile.SYMTYPE,
    target: str = "/etc/passwd",
    members: dict[str, bytes] | None = None,
    gz: bool = False,
) -> Path:
    """A tar with one special member: symlink (SYMTYPE), hard link (LNKTYPE), device (CHRTYPE), fifo."""
    path = Path(directory) / ("special.tar.gz" if gz else "special.tar")
    with tarfile.open(path, "w:gz" if gz else "w") as tf:
        for member, data in (members or {}).items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, target
        tf.addfile(info)
    return path


def write_zip_bomb(directory: Path, size: int = 8 * 1024 * 1024, member: str = "images/bomb.png") -> Path:
    """A zip whose one member inflates from a few KiB to `size` bytes of zeros."""
    return write_zip(directory, {member: bytes(size)}, name="bomb.zip")


def write_lying_zip(directory: Path, data: bytes, declared_size: int, member: str = "images/liar.png") -> Path:
    """A zip whose headers declare `declared_size` bytes for a member that really inflates to len(data)."""
    path = write_zip(directory, {member: data}, name="lying.zip")
    raw = bytearray(path.read_bytes())
    local, central = raw.find(b"PK\x03\x04"), raw.find(b"PK\x01\x02")
    struct.pack_into("<I", raw, local + 22, declared_size)  # local header: uncompressed size
    struct.pack_into("<I", raw, central + 24, declared_size)  # central directory: uncompressed size
    path.write_bytes(bytes(raw))
    return path


def write_many_members_zip(directory: Path, n: int) -> Path:
    return write_zip(directory, {f"images/{i:05d}.txt": b"x" for i in range(n)}, name="many.zip")


def truncated_jpeg() -> bytes:
    """The first half of a real JPEG: identifies as JPEG, fails to decode."""
    data = real_photos()["china.jpg"]
    return data[: len(data) // 2]


def garbage_png() -> bytes:
    """A PNG signature followed by noise."""
    return b"\x89PNG\r\n\x1a\n" + np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels with almost no data: a pixel-bomb header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
