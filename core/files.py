"""Durable file writes and content hashes, shared by the service and the workers."""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

CHUNK_SIZE = 1024 * 1024  # bounded read/copy buffer: memory stays flat whatever the file size


def fsync_dir(directory: Path, *, strict: bool = False) -> None:
    """Make a rename in `directory` durable. Not every platform can fsync a directory (Windows):
    there it is a no-op, unless `strict`, which raises the OSError instead."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        if strict:
            raise
        return
    try:
        os.fsync(fd)
    except OSError:
        if strict:
            raise
    finally:
        os.close(fd)


def atomic_write(path: str | Path, data: bytes | Callable[[BinaryIO], None]) -> Path:
    """Write `data` (bytes, or a function writing to a binary file) to `path` all-or-nothing.

    A temp file in the same directory, fsynced, renamed into place, the directory fsynced: a
    failure at any point leaves `path` as it was before and no temp file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def copy_hashing(src: BinaryIO, out: BinaryIO) -> tuple[str, int]:
    """Copy `src` to `out` in CHUNK_SIZE pieces; (sha256 hex, bytes copied)."""
    h, size = hashlib.sha256(), 0
    while chunk := src.read(CHUNK_SIZE):
        h.update(chunk)
        out.write(chunk)
        size += len(chunk)
    return h.hexdigest(), size


def sweep_stale(directory: Path, pattern: str, older_than: float, *, delete: bool) -> list[str]:
    """Files of `directory` matching `pattern` last modified before `older_than` (epoch seconds):
    leftovers of writers that crashed; removed when `delete`."""
    stale = []
    for path in directory.glob(pattern):
        try:
            if path.stat().st_mtime < older_than:
                stale.append(str(path))
                if delete:
                    path.unlink(missing_ok=True)
        except FileNotFoundError:
            continue
    return stale


def hash_stream(f: BinaryIO) -> str:
    """sha256 (hex) of the rest of a binary stream, read in CHUNK_SIZE pieces."""
    h = hashlib.sha256()
    while chunk := f.read(CHUNK_SIZE):
        h.update(chunk)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 (hex) of a file's content."""
    with open(path, "rb") as f:
        return hash_stream(f)
