"""Image checks on real photos and on broken, oversized and foreign files."""
from __future__ import annotations

import pytest

from service.ingest.errors import IngestError
from service.ingest.images import ImageInfo, check_image
from service.ingest.limits import IngestLimits
from tests.datagen import encode, garbage_png, photo, png_header_only, real_photos, truncated_jpeg


def _file(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _err(path, limits=IngestLimits()) -> IngestError:
    with pytest.raises(IngestError) as info:
        check_image(path, limits, name=path.name)
    return info.value


def test_real_photos_in_every_mode_pass(tmp_path):
    got = {name: check_image(_file(tmp_path, name, data)) for name, data in real_photos().items()}
    assert got["china.jpg"] == ImageInfo(128, 85, "RGB", "JPEG")
    assert got["flower.png"] == ImageInfo(128, 85, "RGB", "PNG")
    assert (got["china_gray.png"].mode, got["flower_gray.jpg"].mode) == ("L", "L")
    assert (got["flower_rgba.png"].mode, got["flower_rgba.png"].format) == ("RGBA", "PNG")


@pytest.mark.parametrize("fmt", ["WEBP", "GIF", "BMP", "TIFF"])
def test_other_allowed_formats_pass(tmp_path, fmt):
    info = check_image(_file(tmp_path, "p", encode(photo(1), fmt)))
    assert (info.format, info.width, info.height) == (fmt, 64, 64)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (truncated_jpeg(), "corrupt or truncated"),
        (garbage_png(), "corrupt or truncated"),
        (b"hello, world" * 10, "not a readable image"),
        (b"", "empty file"),
    ],
)
def test_corrupt_images_rejected(tmp_path, data, words):
    err = _err(_file(tmp_path, "broken.jpg", data))
    assert (err.code, err.status, err.member) == ("corrupt_image", 422, "broken.jpg")
    assert words in err.detail and "'broken.jpg'" in err.detail


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (encode(photo(0), "PPM"), "PPM"),
        (b"%PDF-1.7\n" + bytes(50), "PDF"),
        (b"\x00\x00\x00\x18ftypheic" + bytes(50), "HEIC"),
    ],
)
def test_foreign_formats_named(tmp_path, data, words):
    err = _err(_file(tmp_path, "x.jpg", data))
    assert err.code == "unsupported_image_format" and words in err.detail


def test_pixel_limit(tmp_path):
    path = _file(tmp_path, "p.png", encode(photo(0, size=64)))
    assert check_image(path, IngestLimits(max_image_pixels=64 * 64)).width == 64
    err = _err(path, IngestLimits(max_image_pixels=64 * 64 - 1))
    assert (err.code, err.status) == ("image_too_large", 413) and "64x64" in err.detail


def test_pixel_bomb_headers_rejected_before_decoding(tmp_path):
    # Under Pillow's own guard: our limit fires on the header, before any pixel is decoded.
    err = _err(_file(tmp_path, "b1.png", png_header_only(9000, 9000)))
    assert err.code == "image_too_large" and "81000000 pixels" in err.detail
    # Far over it: Pillow raises DecompressionBombError at open, reported the same way.
    err = _err(_file(tmp_path, "b2.png", png_header_only(30000, 30000)))
    assert (err.code, err.status) == ("image_too_large", 413)
