"""Stored blobs checked before they are used or served, and repaired where a second copy exists.

A checkpoint blob has one: the tar.gz is the packed adapter the workers also keep unpacked in
their adapter cache (data_dir/work/adapters/<sha256>), and packing is reproducible, so
re-packing the cached directory gives back the very bytes. The cache is on the machine that
trained or loaded the adapter: the API finds it when it shares that data directory (embedded
mode, one host); with blobs in S3 and workers elsewhere it usually has none, and a damaged
checkpoint is reported instead. Images and dataset files have no second copy on the server:
putting the same content again (re-uploading the dataset) replaces a corrupt blob, in either
blob store (see BlobStore.put_*).
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from core.adapter_archive import adapter_cache_dir, is_adapter_dir, pack_adapter
from core.files import file_sha256
from core.blobs import BlobNotFound, BlobStore

log = logging.getLogger(__name__)


class BlobDamaged(Exception):
    """A blob is missing or no longer hashes to its name, and nothing could restore it."""

    def __init__(self, sha256: str, *, missing: bool) -> None:
        self.sha256, self.missing = sha256, missing
        super().__init__(f"blob {sha256} is {'missing' if missing else 'corrupt (its content no longer hashes to its name)'}")

    @property
    def code(self) -> str:
        return "blob_missing" if self.missing else "blob_corrupt"


def require_intact(blobs: BlobStore, sha256: str) -> int:
    """The size of blob `sha256`; BlobDamaged unless it exists and hashes to its name."""
    if not blobs.verify(sha256):
        raise BlobDamaged(sha256, missing=not blobs.exists(sha256))
    try:
        return blobs.size(sha256)
    except BlobNotFound:  # deleted since the check
        raise BlobDamaged(sha256, missing=True) from None


def repair_checkpoint_blob(blobs: BlobStore, work_dir: Path, sha256: str) -> bool:
    """Re-pack the adapter cache's copy of checkpoint `sha256` into the store; True when the
    blob is whole again. A cached directory that packs to other bytes is left unused."""
    cached = adapter_cache_dir(work_dir, sha256)
    if not is_adapter_dir(cached):
        return False
    work_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=work_dir, prefix="repair-", suffix=".tar.gz")
    os.close(fd)
    tmp = Path(name)
    try:
        pack_adapter(cached, tmp)
        if file_sha256(tmp) != sha256:
            log.warning("adapter cache %s packs to other bytes than checkpoint blob %s: not used", cached, sha256)
            return False
        blobs.put_file(tmp, move=True)  # putting the same content again replaces a corrupt blob
    finally:
        tmp.unlink(missing_ok=True)
    log.warning("checkpoint blob %s was missing or corrupt: re-published from the adapter cache", sha256)
    return blobs.verify(sha256)


def ensure_checkpoint_blob(blobs: BlobStore, work_dir: Path, sha256: str) -> bool:
    """Make sure checkpoint blob `sha256` is whole: True when it was, False when it was repaired
    from the adapter cache; BlobDamaged when it is damaged and no intact copy exists."""
    if blobs.verify(sha256):
        return True
    if repair_checkpoint_blob(blobs, work_dir, sha256):
        return False
    raise BlobDamaged(sha256, missing=not blobs.exists(sha256))
