"""The local blob store: files named by their sha256 under one directory, written atomically.

Every write goes to a temp file in the destination directory, is fsynced, renamed into place and
the directory fsynced, so a crash leaves either the whole blob or nothing under its name.
Layout: ``<root>/ab/cd/<sha256>``.
"""
from __future__ import annotations

import hashlib
import io
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from core import verified
from core.blobs.base import SHA256_RE, BlobInfo, BlobNotFound, BlobRef, BlobStore, check_sha256
from core.files import copy_hashing, fsync_dir, hash_stream, sweep_stale

REUSE_REFRESH_S = 3600.0  # a put of stored content refreshes the blob's mtime once it is this old


class LocalBlobStore(BlobStore):
    """Files addressed by the sha256 of their content, under one root directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._tmp_dir = self.root / "tmp"
        self._tmp_dir.mkdir(exist_ok=True)

    @property
    def location(self) -> str:
        return str(self.root)

    def path(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def materialize(self, sha256: str) -> Path:
        path = self.path(sha256)
        if not path.is_file():
            raise BlobNotFound(f"blob {sha256} not found")
        return path

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def open(self, sha256: str) -> BinaryIO:
        try:
            return self.path(sha256).open("rb")
        except FileNotFoundError:
            raise BlobNotFound(f"blob {sha256} not found") from None

    def size(self, sha256: str) -> int:
        try:
            return self.path(sha256).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"blob {sha256} not found") from None

    def stat(self, sha256: str) -> BlobInfo:
        try:
            st = self.path(sha256).stat()
        except FileNotFoundError:
            raise BlobNotFound(f"blob {sha256} not found") from None
        return BlobInfo(sha256, st.st_size, st.st_mtime)

    def verify(self, sha256: str) -> bool:
        """True when the blob exists and its content still hashes to its name.

        Hashed once per version of the file (core/verified.py): a file changed since it was
        last verified, or verified more than an hour ago, is hashed again.
        """
        return verified.sha256_matches(self.path(sha256), sha256)

    def _reuse(self, sha256: str) -> bool:
        """True when the blob is already stored whole; its mtime is refreshed, so the garbage
        collector's grace period (service/gc.py) covers it until the caller commits its row.

        A stored file that no longer hashes to its name (corrupted on disk) is not reused: the
        caller writes the content again and the rename in `_install` replaces the bad file, so
        putting the same content again repairs a corrupt blob.
        """
        path = self.path(sha256)
        if not self.verify(sha256):
            return False
        try:
            # Refreshed only when an hour old: a new mtime is a new version to core/verified.py,
            # so touching on every reuse re-hashed the whole blob on the next one. An hour is far
            # inside gc's grace (24 h by default; a grace under REUSE_REFRESH_S is unsafe anyway).
            if path.stat().st_mtime < time.time() - REUSE_REFRESH_S:
                os.utime(path)
        except FileNotFoundError:
            return False
        except PermissionError:  # another user's blob (a shared store): reuse it as it is
            pass
        return True

    def put_bytes(self, data: bytes) -> BlobRef:
        sha = hashlib.sha256(data).hexdigest()
        if self._reuse(sha):
            return BlobRef(sha, len(data))
        return self.put_stream(io.BytesIO(data))

    def put_stream(self, fileobj: BinaryIO) -> BlobRef:
        """Copy a readable binary stream into the store, hashing while copying."""
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp_dir, prefix="put.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                sha, size = copy_hashing(fileobj, out)
                out.flush()
                os.fsync(out.fileno())
            return self._install(Path(tmp_name), sha, size)
        finally:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass

    def put_file(self, path: str | Path, *, move: bool = False) -> BlobRef:
        """Store a local file; with `move=True` the file is renamed in (no copy) when on the same disk."""
        path = Path(path)
        if not move:
            with path.open("rb") as f:
                return self.put_stream(f)
        with path.open("rb") as f:
            sha = hash_stream(f)
        size = path.stat().st_size
        if self._reuse(sha):
            path.unlink()
            return BlobRef(sha, size)
        # The rename must stay on one filesystem to be atomic; elsewhere fall back to a copy.
        tmp = self._tmp_dir / f"move.{secrets.token_hex(8)}.tmp"
        try:
            os.replace(path, tmp)
        except OSError:
            ref = self.put_file(path)
            path.unlink()
            return ref
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        try:
            return self._install(tmp, sha, size)
        finally:
            tmp.unlink(missing_ok=True)

    def _install(self, tmp: Path, sha: str, size: int) -> BlobRef:
        """Rename a finished, fsynced temp file to its content address."""
        dest = self.path(sha)
        if self._reuse(sha):
            return BlobRef(sha, size)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)  # blobs are immutable: guard against in-place edits
        os.replace(tmp, dest)  # also replaces a corrupt file of the same name (see _reuse)
        fsync_dir(dest.parent)
        return BlobRef(sha, size)

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def touch(self, sha256: str) -> None:
        try:
            os.utime(self.path(sha256))
        except FileNotFoundError:
            raise BlobNotFound(f"blob {sha256} not found") from None

    def list_blobs(self) -> Iterator[BlobInfo]:
        # Blobs live at <root>/ab/cd/<sha256>; tmp/ holds puts in progress.
        for path in self.root.glob("??/??/*"):
            name = path.name
            if SHA256_RE.match(name) and (name[:2], name[2:4]) == (path.parent.parent.name, path.parent.name):
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                yield BlobInfo(name, st.st_size, st.st_mtime)

    def sweep_tmp(self, older_than: float, *, delete: bool) -> list[str]:
        return sweep_stale(self._tmp_dir, "*.tmp", older_than, delete=delete)
