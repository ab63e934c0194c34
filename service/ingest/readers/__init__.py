"""Dataset readers behind one base class (`RecordReader`), and how a source's format is told.

| format  | source                                             | a record's location       |
|---------|----------------------------------------------------|---------------------------|
| json    | a JSON array of records                            | line                      |
| jsonl   | JSON Lines                                         | line                      |
| parquet | a Parquet file, one row per record                 | row group and row         |
| hf      | a `save_to_disk` folder, or a .zip/.tar(.gz) of it | shard (Arrow file) and row|
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Literal

from ..archives import detect_archive, iter_extract, list_archive
from ..errors import ArchiveError, DatasetError
from ..limits import IngestLimits
from .base import EMBEDDED, EmbeddedImage, RawRecord, RecordReader
from .hf import STATE_FILE, HFDatasetReader
from .jsonl import JsonReader, detect_format
from .parquet import ParquetReader

SourceFormat = Literal["json", "jsonl", "parquet", "hf"]
FORMATS: tuple[str, ...] = ("json", "jsonl", "parquet", "hf")
_PARQUET_MAGIC = b"PAR1"
_ARCHIVE_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b")

__all__ = ["EMBEDDED", "FORMATS", "EmbeddedImage", "HFDatasetReader", "JsonReader", "ParquetReader", "RawRecord",
           "RecordReader", "SourceFormat", "hf_root_in_archive", "open_reader", "sniff_format"]


def sniff_format(path: str | os.PathLike[str]) -> SourceFormat | None:
    """The format of a file or folder from its bytes (None: an empty file). A folder, or an
    archive (.zip/.tar/.tar.gz), is a Hugging Face dataset directory."""
    path = Path(path)
    if path.is_dir():
        return "hf"
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] == _PARQUET_MAGIC:
        return "parquet"
    if head.startswith(_ARCHIVE_MAGIC) or head[257:262] == b"ustar":
        return "hf"
    try:
        return detect_format(path)
    except DatasetError as e:
        if e.code != "unsupported_format":
            raise
        raise DatasetError(
            "unsupported_format", f"{e.detail.rstrip('.')}; or a Parquet file, or a Hugging Face dataset folder "
            "(save_to_disk) sent as .zip, .tar or .tar.gz", line=e.line) from None


def hf_root_in_archive(archive: str | os.PathLike[str], limits: IngestLimits) -> str:
    """The folder (member prefix, "" for the top) of the one state.json in an archive of a
    `save_to_disk` directory; checks the archive's safety and limits on the way."""
    return _hf_members(archive, limits)[0]


_HF_ARCHIVE = "the dataset archive"


def hf_archive_limits(limits: IngestLimits) -> IngestLimits:
    """An archived HF folder's limits: its Arrow shards are the dataset itself (save_to_disk
    writes shards of up to 500 MB), so one member, and all of them, may be as large as the
    dataset limit; the images archive's 64 MiB per member is for images."""
    return replace(limits, max_member_bytes=limits.max_dataset_bytes, max_uncompressed_bytes=limits.max_dataset_bytes)


def _hf_members(archive: str | os.PathLike[str], limits: IngestLimits) -> tuple[str, list[str]]:
    """(the dataset folder's member prefix, the members inside it)."""
    try:
        detect_archive(archive)
    except ArchiveError:
        raise DatasetError("unsupported_format", "a Hugging Face dataset must be its save_to_disk folder or a "
                           ".zip, .tar or .tar.gz of it") from None
    members = [m.name for m in list_archive(archive, hf_archive_limits(limits), _HF_ARCHIVE)]
    states = [n for n in members if n.rsplit("/", 1)[-1] == STATE_FILE]
    if len(states) != 1:
        found = "none" if not states else ", ".join(repr(s) for s in states[:3])
        raise DatasetError("corrupt_dataset", f"an archive dataset must hold one Hugging Face dataset folder "
                           f"(save_to_disk) with one {STATE_FILE}; found {found}")
    root = states[0][: -len(STATE_FILE)]
    if not any(n.startswith(root) and n.endswith(".arrow") for n in members):
        raise DatasetError("corrupt_dataset", f"the dataset folder {root or '(top)'!r} in the archive holds no "
                           ".arrow file")
    root = root.rstrip("/")
    return root, [n for n in members if not root or n.startswith(root + "/")]


def open_reader(source: str | os.PathLike[str], limits: IngestLimits, workdir: str | os.PathLike[str],
                fmt: SourceFormat | None = None) -> RecordReader:
    """A reader for `source` (a file or a folder); an archived HF folder is extracted into workdir."""
    source, workdir = Path(source), Path(workdir)
    fmt = fmt or sniff_format(source)
    spool = workdir / "embedded"
    if fmt == "parquet":
        return ParquetReader(source, limits, spool)
    if fmt == "hf":
        if source.is_dir():
            return HFDatasetReader(source, limits, spool)
        root, wanted = _hf_members(source, limits)
        dest = workdir / "hf"
        for _ in iter_extract(source, dest, hf_archive_limits(limits), only=set(wanted), label=_HF_ARCHIVE):
            pass
        return HFDatasetReader(dest / root if root else dest, limits, spool)
    return JsonReader(source, limits, spool)
