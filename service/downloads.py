"""Downloads: a round's selection as JSONL / JSON / tar, streamed.

No web framework here; the routes wrap these generators in streaming responses. Memory stays
flat whatever the selection size: records are read from SQL in keyset batches, images are
copied from the blob store in chunks, and the tar is written member by member. These streams
take no Range: they are generated, not stored, so their length is unknown until the end (no
library offers Range over a generator; a client re-downloads). Stored blobs (checkpoints) are
served with Range by service/api/blob_response.py.
"""
from __future__ import annotations

import json
import posixpath
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.files import CHUNK_SIZE
from service.db.models import Round, Sample, Selection
from service.integrity import require_intact
from core.blobs import BlobStore

FORMATS = ("jsonl", "json", "tar")
MEDIA_TYPES = {"jsonl": "application/x-ndjson", "json": "application/json", "tar": "application/x-tar"}
_BATCH = 500  # selection rows per SQL query: bounded memory, few round trips
_BLOCK = tarfile.BLOCKSIZE


# ---- selection records ------------------------------------------------------------------------


def iter_selection(session_factory: Callable[[], Session], rnd: Round) -> Iterator[tuple[Selection, Sample]]:
    """(selection, sample) pairs of the round in sample-id order, fetched in batches of _BATCH."""
    after = -1
    while True:
        with session_factory() as session:
            rows = session.execute(
                select(Selection, Sample)
                .join(Sample, Sample.id == Selection.sample_id)
                .where(Selection.round_id == rnd.id, Selection.sample_id > after)
                .order_by(Selection.sample_id)
                .limit(_BATCH)
            ).all()
            session.expunge_all()
        if not rows:
            return
        yield from rows
        after = rows[-1][0].sample_id


def selection_record(rnd: Round, sel: Selection, sample: Sample, images: list[str] | None = None) -> dict[str, Any]:
    """The sample's original record plus its provenance under "adaptinf"."""
    provenance: dict[str, Any] = {
        "round": rnd.number,
        "round_id": rnd.id,
        "sample_id": sample.id,
        "dataset_id": sample.dataset_id,
        "key": sample.key,
        "cluster": sel.cluster,
        "expert": sel.expert,
        "score": sel.score,
        "stratum": sel.stratum,
    }
    if images is not None:
        provenance["images"] = images  # tar paths of the record's images, in placeholder order
    return {**sample.record, "adaptinf": provenance}


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def stream_jsonl(session_factory: Callable[[], Session], rnd: Round) -> Iterator[bytes]:
    buf = bytearray()
    for sel, sample in iter_selection(session_factory, rnd):
        buf += _line(selection_record(rnd, sel, sample))
        if len(buf) >= CHUNK_SIZE // 4:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


def stream_json(session_factory: Callable[[], Session], rnd: Round) -> Iterator[bytes]:
    """A JSON array, one record per line, written as it is read."""
    yield b"["
    sep = b"\n"
    for chunk in _batched_records(session_factory, rnd):
        for rec in chunk:
            yield sep + json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode()
            sep = b",\n"
    yield b"\n]\n"


def _batched_records(session_factory: Callable[[], Session], rnd: Round) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for sel, sample in iter_selection(session_factory, rnd):
        batch.append(selection_record(rnd, sel, sample))
        if len(batch) >= _BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


# ---- tar ------------------------------------------------------------------------------------------


JSONL_MEMBER = "selection.jsonl"


def _safe_member(name: str) -> str | None:
    """A relative POSIX path for a record's image name, or None if it would escape the tar root."""
    norm = posixpath.normpath(name.replace("\\", "/"))
    if norm.startswith(("/", "../")) or norm in ("..", ".", "") or re.match(r"^[A-Za-z]:", norm):
        return None
    return norm


@dataclass
class TarPlan:
    """A spooled selection.jsonl and the images to append: (tar path, blob sha256, size)."""

    jsonl: IO[bytes]
    jsonl_size: int
    images: list[tuple[str, str, int]]
    count: int

    def close(self) -> None:
        self.jsonl.close()


def plan_tar(session_factory: Callable[[], Session], rnd: Round, blobs: BlobStore, workdir: Path) -> TarPlan:
    """Write selection.jsonl to a temp file and list the images (each stored once).

    An image sits at its record's own relative name, so the extracted tar is the image folder
    the original records resolve against (LLaVA's `image_folder`). A name two different images
    share (two datasets both using "1.jpg") keeps the first there; the others go to
    <dataset_id>/<name>. Each record lists its tar paths under adaptinf.images. Every image is
    checked against its sha256 first (once per version of its file, core/verified.py): a
    missing or corrupt one raises BlobDamaged before any byte is sent.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    spool = tempfile.TemporaryFile(dir=workdir)
    by_path: dict[str, str] = {}  # tar path -> sha256
    images: list[tuple[str, str, int]] = []
    count = 0
    try:
        for sel, sample in iter_selection(session_factory, rnd):
            paths = []
            for name, sha in zip(sample.image_names or [], sample.image_refs or []):
                path = _safe_member(str(name)) or f"images/{sha}"
                if by_path.get(path, sha) != sha or path.split("/")[0] == JSONL_MEMBER:
                    path = f"{sample.dataset_id}/{path}"
                if path not in by_path:
                    by_path[path] = sha
                    images.append((path, sha, require_intact(blobs, sha)))
                paths.append(path)
            spool.write(_line(selection_record(rnd, sel, sample, paths)))
            count += 1
        size = spool.tell()
        spool.seek(0)
        return TarPlan(spool, size, images, count)
    except BaseException:
        spool.close()
        raise


def _header(name: str, size: int, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, int(mtime)
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


def _copy(f: IO[bytes], size: int) -> Iterator[bytes]:
    left = size
    while left > 0:
        chunk = f.read(min(CHUNK_SIZE, left))
        if not chunk:
            raise OSError(f"file ended {left} bytes early")
        left -= len(chunk)
        yield chunk


def stream_tar(plan: TarPlan, blobs: BlobStore, mtime: float) -> Iterator[bytes]:
    """The tar stream: selection.jsonl, then the images; a member at a time, CHUNK_SIZE at most."""
    try:
        yield _header(JSONL_MEMBER, plan.jsonl_size, mtime)
        yield from _copy(plan.jsonl, plan.jsonl_size)
        yield _padding(plan.jsonl_size)
        for path, sha, size in plan.images:
            yield _header(path, size, mtime)
            with blobs.open(sha) as f:
                yield from _copy(f, size)
            yield _padding(size)
        yield b"\0" * (2 * _BLOCK)  # end-of-archive marker
    finally:
        plan.close()
