"""Adapter checkpoints as blobs: a PEFT adapter directory ⇄ a reproducible tar.gz.

The archive's root holds exactly `adapter_config.json` and `adapter_model.safetensors` (contract
§3), so `tar xzf` gives a directory `PeftModel.from_pretrained` loads. Packing lives in
core/adapter_archive.py (the API re-packs a cached adapter to repair a corrupt blob): the same
weights always give the same sha256.
"""
from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from core.adapter_archive import ADAPTER_FILES, adapter_cache_dir, pack_adapter
from core.blobs import BlobRef, BlobStore

__all__ = ["ADAPTER_FILES", "CheckpointBlobError", "pack_adapter", "store_adapter", "unpack_adapter"]


class CheckpointBlobError(Exception):
    """A checkpoint blob is missing, corrupt, or not an adapter archive."""

    code = "checkpoint_corrupt"


def store_adapter(loaded, blobs: BlobStore, work_dir: Path) -> BlobRef:  # noqa: ANN001 - a LoadedModel
    """Save the adapter of `loaded`, pack it and put the archive in the blob store.

    The saved directory is kept as the checkpoint's adapter cache entry (work_dir/adapters/<sha>):
    the next round loads it from there, and it is the second copy a corrupt blob is re-packed from
    (service/integrity.py).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="adapter-", dir=work_dir))
    try:
        loaded.save_adapter(tmp / "adapter")
        ref = blobs.put_file(pack_adapter(tmp / "adapter", tmp / "adapter.tar.gz"), move=True)
        _keep_in_cache(tmp / "adapter", adapter_cache_dir(work_dir, ref.sha256))
        return ref
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _keep_in_cache(saved: Path, dest: Path) -> None:
    if (dest / ADAPTER_FILES[0]).is_file():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(saved, dest)
    except OSError:  # another process cached it first, or another disk: unpacking fills it later
        pass


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
        # A local file: tarfile seeks back to each member, which over S3 would re-read the archive.
        with tarfile.open(blobs.materialize(sha256), mode="r:gz") as tar:
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

