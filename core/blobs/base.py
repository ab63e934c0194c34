"""The blob store's interface: immutable files addressed by the sha256 of their content.

Uploads, images, feature shards, index versions, adapters, plans and selections are all blobs;
SQL holds their sha256 as typed references. Two implementations sit behind this interface:
`LocalBlobStore` (a directory: the embedded default, or a volume every worker mounts) and
`S3BlobStore` (any S3-compatible bucket: workers on other machines need only the database, the
broker and the bucket). Callers see only this class.
"""
from __future__ import annotations

import re
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from core.files import CHUNK_SIZE, atomic_write

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class BlobNotFound(FileNotFoundError):
    """No blob with this sha256 in the store."""


class BlobCorrupt(BlobNotFound):
    """The stored object no longer hashes to its name: as unusable as a missing one."""


class BlobStoreUnavailable(ConnectionError):
    """The store cannot be reached or refuses us (endpoint down, no such bucket, credentials
    refused); the message names the setting to check. A ConnectionError, so a job is retried."""

    code = "blob_store_unavailable"


@dataclass(frozen=True)
class BlobRef:
    sha256: str
    size: int


@dataclass(frozen=True)
class BlobInfo:
    """One stored blob as listed (for the garbage collector): its name, size and last write or reuse."""

    sha256: str
    size: int
    mtime: float


def check_sha256(sha256: str) -> str:
    if not SHA256_RE.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


class BlobStore(ABC):
    """put, open, materialise locally, list, delete, verify."""

    #: True when the blobs live off this machine (a bucket): readiness then checks that the store
    #: answers, since the data directory's free disk says nothing about it.
    remote: bool = False

    def check(self) -> None:
        """Raise BlobStoreUnavailable when the store cannot be used right now (readiness)."""

    @abstractmethod
    def put_stream(self, fileobj: BinaryIO) -> BlobRef:
        """Copy a readable binary stream into the store, hashing while copying."""

    @abstractmethod
    def put_file(self, path: str | Path, *, move: bool = False) -> BlobRef:
        """Store a local file; `move=True` lets the store take the file (it is gone afterwards)."""

    @abstractmethod
    def put_bytes(self, data: bytes) -> BlobRef: ...

    @abstractmethod
    def open(self, sha256: str) -> BinaryIO:
        """A readable binary stream of the blob (BlobNotFound when absent)."""

    @abstractmethod
    def exists(self, sha256: str) -> bool: ...

    @abstractmethod
    def size(self, sha256: str) -> int: ...

    @abstractmethod
    def stat(self, sha256: str) -> BlobInfo:
        """Size and last write or reuse (BlobNotFound when absent)."""

    @abstractmethod
    def verify(self, sha256: str) -> bool:
        """True when the blob exists and its content still hashes to its name."""

    @abstractmethod
    def materialize(self, sha256: str) -> Path:
        """A local file holding the blob, for libraries that need a path (PIL, tarfile, FAISS,
        numpy, FileResponse). Read-only: never write to it. BlobNotFound when absent."""

    @abstractmethod
    def delete(self, sha256: str) -> None:
        """Remove a blob (callers make sure nothing in SQL still refers to it)."""

    @abstractmethod
    def list_blobs(self) -> Iterator[BlobInfo]:
        """Every stored blob, for the garbage collector."""

    @abstractmethod
    def touch(self, sha256: str) -> None:
        """Refresh a blob's mtime (the garbage collector's grace period counts from it)."""

    @abstractmethod
    def sweep_tmp(self, older_than: float, *, delete: bool) -> list[str]:
        """Leftovers of writes that crashed, last modified before `older_than` (epoch seconds)."""

    def copy_to(self, sha256: str, dest: str | Path) -> Path:
        """Copy a blob out to a local file, atomically."""
        with self.open(sha256) as src:
            return atomic_write(dest, lambda out: shutil.copyfileobj(src, out, CHUNK_SIZE))

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the blobs live, for operators' messages (a directory or an s3:// URL)."""
