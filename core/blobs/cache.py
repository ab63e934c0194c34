"""Local copies of remote blobs, for libraries that need a path (PIL, tarfile, numpy, FAISS).

Layout ``<root>/ab/cd/<sha256>``, like the local store; every file is whole (written to
``<root>/tmp`` and renamed in), checked against its name before it is handed out, and read-only.
Several processes of one machine share the folder: renames are atomic and same-named files hold
the same bytes.

The size bound is soft. Past `max_bytes` the least recently used files are removed (a hit
refreshes the file's mtime) down to 90% of the bound, but never a file used within `keep_s`:
a job holds the paths it materialised (a training set's images, opened again every epoch), and
a file removed under it would fail the job. So a machine that touches more than the bound within
`keep_s` keeps more for a while.

Known limit: the protection lasts `keep_s` after a path was last handed out, not as long as a job
holds it. A job that materialised paths once and opens them again more than `keep_s` later (24 h
by default) may find a copy trimmed meanwhile; such a job should call `materialize` again, which
downloads the copy anew, rather than keep paths across days.
"""
from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

from core import verified
from core.blobs.base import check_sha256
from core.files import fsync_dir, sweep_stale

LOW_WATER = 0.9  # a trim frees down to this share of the bound, so trims are rare
REFRESH_SHARE = 0.1  # a hit refreshes a copy's mtime once it is older than this share of keep_s


class BlobCache:
    """A bounded folder of verified, read-only blob copies."""

    def __init__(self, root: str | Path, *, max_bytes: int, keep_s: float) -> None:
        self.root = Path(root).resolve()
        self.tmp_dir = self.root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.keep_s = max_bytes, keep_s
        self._lock = threading.Lock()
        self._bytes: int | None = None  # this process's running estimate; a trim recounts
        self._next_trim = max_bytes  # trim when the estimate passes this

    def path(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def get(self, sha256: str) -> Path | None:
        """The cached copy of `sha256` when it is there and whole (a damaged one is removed)."""
        path = self.path(sha256)
        if not path.is_file():
            return None
        if not verified.sha256_matches(path, sha256):
            self.discard(sha256)
            return None
        try:
            # Most recently used: trimmed last. Only a copy not refreshed for a tenth of keep_s is
            # touched: a new mtime is a new version to core/verified.py, so touching on every hit
            # re-hashed the whole file on the next one (a 295 MB index per GET). A copy in use
            # thus stays protected for at least 0.9 * keep_s after its last use.
            if path.stat().st_mtime < time.time() - self.keep_s * REFRESH_SHARE:
                os.utime(path)
        except OSError:  # gone meanwhile (a trim in another process), or another user's file
            if not path.is_file():
                return None
        return path

    def new_tmp(self, prefix: str) -> tuple[int, Path]:
        """An open file descriptor and path in the cache's temp folder (same disk: install renames)."""
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix=prefix, suffix=".tmp")
        return fd, Path(name)

    def install(self, tmp: Path, sha256: str) -> Path:
        """Rename a finished file whose content hashes to `sha256` into the cache (the caller
        checked the hash); a file on another disk is copied there first."""
        dest = self.path(sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        size = tmp.stat().st_size
        os.chmod(tmp, 0o444)  # the cache hands out read-only copies (see BlobStore.materialize)
        try:
            os.replace(tmp, dest)
        except OSError:  # another filesystem: no atomic rename from there
            fd, staged = self.new_tmp("adopt.")
            with os.fdopen(fd, "wb") as out, open(tmp, "rb") as src:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
            os.chmod(staged, 0o444)
            os.replace(staged, dest)
            tmp.unlink(missing_ok=True)
        os.utime(dest)  # an adopted upload keeps its old mtime otherwise: used now
        fsync_dir(dest.parent)
        self._added(size, dest)
        return dest

    def discard(self, sha256: str) -> None:
        path = self.path(sha256)
        path.unlink(missing_ok=True)
        verified.forget(path, sha256)

    def _added(self, size: int, new: Path) -> None:
        with self._lock:
            if self._bytes is None:
                self._bytes = self._count()
            else:
                self._bytes += size
            due = self._bytes > self._next_trim
        if due:
            self.trim(spare=new)  # the copy about to be handed out stays, whatever keep_s says

    def _count(self) -> int:
        return sum(st.st_size for _, st in self._entries())

    def _entries(self) -> list[tuple[Path, os.stat_result]]:
        out = []
        for path in self.root.glob("??/??/*"):
            try:
                out.append((path, path.stat()))
            except FileNotFoundError:
                continue
        return out

    def trim(self, spare: Path | None = None) -> int:
        """Remove least recently used copies until the cache holds at most LOW_WATER of the
        bound, sparing those used within keep_s (and `spare`); returns the bytes held after."""
        entries = sorted(self._entries(), key=lambda e: e[1].st_mtime)
        total = sum(st.st_size for _, st in entries)
        target = int(self.max_bytes * LOW_WATER)
        cutoff = time.time() - self.keep_s
        for path, st in entries:
            if total <= target or st.st_mtime >= cutoff:
                break  # sorted by mtime: every later file was used more recently
            if path == spare:
                continue
            # Stat again: a get() in this or another process may have refreshed the copy and handed
            # it out since the listing. (A window remains between this stat and the unlink.)
            try:
                if path.stat().st_mtime >= cutoff:
                    continue
            except FileNotFoundError:
                total -= st.st_size  # removed meanwhile (another process's trim)
                continue
            path.unlink(missing_ok=True)
            total -= st.st_size
        with self._lock:
            self._bytes = total
            # Still over (everything recent): wait for another tenth of the bound before recounting,
            # so a cache of a million files is not listed again on every install.
            self._next_trim = max(self.max_bytes, total + max(self.max_bytes // 10, 1))
        return total

    def sweep_tmp(self, older_than: float, *, delete: bool) -> list[str]:
        """Temp files of downloads and uploads that crashed."""
        return sweep_stale(self.tmp_dir, "*.tmp", older_than, delete=delete)
