"""Decode-check one image with Pillow: allowed format, pixel limit, full decode of the first frame."""
from __future__ import annotations

import os
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from .errors import ImageError
from .limits import IngestLimits

# Only these decoders are ever tried: Pillow's other plugins (EPS runs Ghostscript, ...) are a
# needless attack surface for user uploads.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_KNOWN_OTHERS = {b"%PDF": "PDF", b"<svg": "SVG", b"<?xml": "SVG/XML"}  # to say what we got


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    mode: str  # Pillow mode: RGB, L, RGBA, P, ...
    format: str  # one of ALLOWED_FORMATS


def check_image(path: str | os.PathLike[str], limits: IngestLimits = IngestLimits(), name: str | None = None) -> ImageInfo:
    """Open, size-check and fully decode the image at `path`; ImageError names it as `name`."""
    label = name or os.fspath(path)
    try:
        with Image.open(path, formats=ALLOWED_FORMATS) as im:
            width, height = im.size
            if width * height > limits.max_image_pixels:
                raise _too_large(label, width, height, limits)
            info = ImageInfo(width, height, im.mode, im.format or "")
            im.load()  # decodes the (first) frame: the one the model will see
    except (ImageError, MemoryError):
        raise
    except Image.DecompressionBombError:
        # Pillow's own guard (twice its MAX_IMAGE_PIXELS) fired before we could read the size.
        raise ImageError(
            "image_too_large", f"image {label!r} is a decompression bomb (too many pixels)", member=label
        ) from None
    except UnidentifiedImageError:
        raise _unidentified(path, label) from None
    except Exception as e:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, struct.error ...
        raise ImageError("corrupt_image", f"image {label!r} is corrupt or truncated: {e}", member=label) from None
    return info


def _too_large(label: str, width: int, height: int, limits: IngestLimits) -> ImageError:
    return ImageError(
        "image_too_large",
        f"image {label!r} is {width}x{height} = {width * height} pixels, over the limit of {limits.max_image_pixels}",
        member=label,
    )


def _unidentified(path: str | os.PathLike[str], label: str) -> ImageError:
    with open(path, "rb") as f:
        head = f.read(32)
    if not head:
        return ImageError("corrupt_image", f"image {label!r} is an empty file", member=label)
    other = next((fmt for magic, fmt in _KNOWN_OTHERS.items() if head.startswith(magic)), None)
    if head[4:8] == b"ftyp":  # ISO media: HEIC from phones, AVIF
        other = f"HEIC/AVIF (brand {head[8:12].decode('latin-1')!r})"
    other = other or _pillow_format(head[:16])
    if other in ALLOWED_FORMATS:
        return ImageError(
            "corrupt_image", f"image {label!r} looks like {other} but is corrupt or truncated", member=label
        )
    if other:
        return ImageError(
            "unsupported_image_format",
            f"image {label!r} is {other}; allowed formats are {', '.join(ALLOWED_FORMATS)}",
            member=label,
        )
    return ImageError(
        "corrupt_image",
        f"image {label!r} is not a readable image (allowed formats: {', '.join(ALLOWED_FORMATS)})",
        member=label,
    )


def _pillow_format(prefix: bytes) -> str | None:
    """Name a format Pillow recognises by its magic bytes alone (no plugin parses the file)."""
    Image.init()
    for fmt, (_, accept) in Image.OPEN.items():
        try:
            if accept is not None and accept(prefix):
                return fmt
        except Exception:  # noqa: BLE001 - a plugin's check choking on a short prefix is just "no"
            continue
    return None
