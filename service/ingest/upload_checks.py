"""The cheap checks an upload gets before the API answers 202: no image is extracted or decoded
(the ingest worker decodes each one, once).

JSON and JSON Lines: every record is parsed (memory: one record) and every image reference is
looked up in the archive's member listing. Measured with bench/ingest_validation.py (2,000
samples, one image each, 2 shared cores under load): 0.05-0.11 s, where the full check with
every image decoded took 0.73-1.74 s. Parquet: the footer (schema, row count, row group sizes).
An archived Hugging Face folder: the archive's listing (one state.json, Arrow files); a folder
by reference: state.json and each Arrow file's schema. Either way the images archive's listing
is checked for safety and limits.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .archives import list_archive
from .limits import IngestLimits
from .readers import ParquetReader, SourceFormat, hf_root_in_archive, sniff_format
from .validate import validate_upload


@dataclass(frozen=True)
class UploadCheck:
    format: SourceFormat
    num_samples: int  # 0 when only the worker can count them (an archived HF folder)
    num_images: int  # distinct images referenced; 0 when only the worker can tell
    tokens_placed: int = 0
    first_token_placed: str | None = None


def check_upload(dataset: str | os.PathLike[str], archive: str | os.PathLike[str] | None,
                 workdir: str | os.PathLike[str], limits: IngestLimits) -> UploadCheck:
    """Sniff the format and run its cheap checks; raise the first IngestError."""
    fmt = sniff_format(dataset)
    if fmt in ("json", "jsonl", None):
        got = validate_upload(dataset, archive, workdir, limits, image_mode="list", keep_samples=False)
        return UploadCheck(fmt or "json", got.num_samples, got.num_images, got.tokens_placed, got.first_token_placed)
    if fmt == "parquet":
        rows = ParquetReader(dataset, limits).check() or 0
    else:
        hf_root_in_archive(dataset, limits)
        rows = 0
    if archive is not None:
        list_archive(archive, limits)
    return UploadCheck(fmt, rows, 0)


def check_source(path: str | os.PathLike[str], archive: str | os.PathLike[str] | None, limits: IngestLimits,
                 fmt: SourceFormat | None = None) -> SourceFormat:
    """The format of a local dataset by reference (a file or an HF folder), by its cheap checks."""
    from .readers import open_reader

    path = Path(path)
    fmt = fmt or sniff_format(path)
    if fmt is None:
        from .errors import DatasetError

        raise DatasetError("empty_dataset", "the dataset file is empty")
    if path.is_dir() or fmt in ("parquet", "json", "jsonl"):
        open_reader(path, limits, Path(os.devnull), fmt).check()
    else:  # an archived HF folder: its listing
        hf_root_in_archive(path, limits)
    if archive is not None:
        check_source_archive(archive, limits)
    return fmt


def check_source_archive(archive: str | os.PathLike[str], limits: IngestLimits) -> None:
    """The cheap checks of a local images archive by reference: its listing."""
    list_archive(archive, limits)


def sniff_head(head: bytes) -> SourceFormat:
    """A remote file's format from its first bytes (an S3 object's first 512)."""
    from .errors import DatasetError

    if head[:4] == b"PAR1":
        return "parquet"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b")) or head[257:262] == b"ustar":
        return "hf"
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    if text[:1] == b"[":
        return "json"
    if text[:1] == b"{":
        return "jsonl"
    raise DatasetError("unsupported_format", "the dataset must be a JSON array, JSON Lines, a Parquet file or a "
                       "Hugging Face dataset folder (or a .zip/.tar of it); give `format` if it is one of them")
