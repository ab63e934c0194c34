"""Adapter checkpoints as blobs: a PEFT adapter directory ⇄ a reproducible tar.gz.

The archive's root holds exactly `adapter_config.json` and `adapter_model.safetensors` (contract
§3), so `tar xzf` gives a directory `PeftModel.from_pretrained` loads. Member metadata and the
gzip header carry no time or owner, so the same weights always give the same sha256.
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from service.storage import BlobRef, BlobStore

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class CheckpointBlobError(Exception):
    """A checkpoint blob is missing, corrupt, or not an adapter archive."""

    code = "checkpoint_corrupt"


def pack_adapter(adapter_dir: Path, dest: Path) -> Path:
    """Write `adapter_dir`'s two adapter files as a tar.gz at `dest`."""
    adapter_dir = Path(adapter_dir)
    with open(dest, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in ADAPTER_FILES:
                path = adapter_dir / name
                if not path.is_file():
                    raise FileNotFoundError(f"adapter directory {str(adapter_dir)!r} has no {name}")
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = path.stat().st_size, 0o644, 0
                with open(path, "rb") as f:
                    tar.addfile(info, f)
    return dest


def store_adapter(loaded, blobs: BlobStore, work_dir: Path) -> BlobRef:  # noqa: ANN001 - a LoadedModel
    """Save the adapter of `loaded`, pack it and put the archive in the blob store."""
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="adapter-", dir=work_dir))
    try:
        loaded.save_adapter(tmp / "adapter")
        return blobs.put_file(pack_adapter(tmp / "adapter", tmp / "adapter.tar.gz"), move=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unpack_adapter(blobs: BlobStore, sha256: str, dest: Path) -> Path:
    """Extract checkpoint `sha256` into directory `dest` (created atomically by a rename).

    Only the two adapter files are accepted, as regular files at the archive root.
    """
    dest = Path(dest)
    if (dest / ADAPTER_FILES[0]).is_file():
        return dest
    if not blobs.verify(sha256):
        raise CheckpointBlobError(f"checkpoint blob {sha256} is missing or corrupt")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        with blobs.open(sha256) as f, tarfile.open(fileobj=f, mode="r:gz") as tar:
            members = tar.getmembers()
            names = sorted(m.name for m in members)
            if names != sorted(ADAPTER_FILES) or not all(m.isreg() for m in members):
                raise CheckpointBlobError(f"checkpoint {sha256} holds {names}, expected {list(ADAPTER_FILES)}")
            for m in members:
                src = tar.extractfile(m)
                with open(tmp / m.name, "wb") as out:
                    shutil.copyfileobj(src, out)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / ADAPTER_FILES[0]).is_file():  # lost a race to another process: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def adapter_archive_names(data: bytes) -> list[str]:
    """Member names of an adapter archive (tests and diagnostics)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getnames()
