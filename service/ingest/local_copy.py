"""A file:// source copied into the worker's workdir through file descriptors, so what is read is
what the prefix check allowed.

The API resolves the path and checks its prefix; between that check and an open by path, a
component could be replaced by a link leading elsewhere. Here the final component is opened with
O_NOFOLLOW, the open descriptor's real path (/proc/self/fd) must still be the resolved one, and
the bytes come from that descriptor. A folder (an HF save_to_disk directory, flat) is listed from
its own descriptor and each file opened relative to it, links refused. Each file's size and mtime
are compared before and after its copy: a source rewritten meanwhile is `source_changed`; after
the copy the owner may change it freely, as the worker reads only its copy.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import IngestError
from .limits import IngestLimits

_CHUNK = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _unreadable(field: str, url: str, why: str) -> IngestError:
    return IngestError("source_unreadable", f"{field}: {url} cannot be read: {why}", field=field)


def _changed(field: str, url: str) -> IngestError:
    return IngestError("source_changed", f"{field}: {url} changed while it was being read; ingest it again once "
                       "it stays put", field=field)


def _check_still_there(fd: int, resolved: str, field: str, url: str) -> None:
    """The descriptor must be the resolved path itself, not somewhere a swapped link led."""
    proc = f"/proc/self/fd/{fd}"
    if os.path.exists(proc):
        where = os.path.realpath(proc)
    else:  # no /proc (not Linux): the same inode as the resolved path is the best available check
        st, now = os.fstat(fd), os.stat(resolved, follow_symlinks=False)
        where = resolved if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino) else "(elsewhere)"
    if where != resolved:
        raise IngestError("uri_not_allowed", f"{field}: {url} changed to lead elsewhere after it was checked; "
                          "links are not followed", field=field)


def _copy_fd(src: int, dest: Path, budget: int, field: str, url: str) -> int:
    """Copy an open file into `dest`; its bytes (at most `budget`, else dataset_too_large)."""
    before = os.fstat(src)
    if before.st_size > budget:
        raise IngestError("dataset_too_large", f"{field}: {url} holds more bytes than the dataset limit allows",
                          field=field)
    n = 0
    with open(dest, "wb") as out:
        while chunk := os.read(src, _CHUNK):
            n += len(chunk)
            if n > budget:
                raise _changed(field, url)  # it grew past its size while we read it
            out.write(chunk)
    after = os.fstat(src)
    if (after.st_size, after.st_mtime_ns, n) != (before.st_size, before.st_mtime_ns, before.st_size):
        raise _changed(field, url)
    return n


def copy_local(resolved: str, url: str, dest: Path, field: str, limits: IngestLimits) -> Path:
    """Copy the file or flat folder at `resolved` (already resolved and prefix-checked) into
    `dest`; the local path to read. Errors: source_not_found, source_unreadable, uri_not_allowed
    (a link swapped in), dataset_too_large, source_changed."""
    try:
        fd = os.open(resolved, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        raise IngestError("source_not_found", f"{field}: {url} does not exist", field=field) from None
    except OSError as e:  # ELOOP: the final component became a link; EACCES ...
        if e.errno == errno.ELOOP:
            raise IngestError("uri_not_allowed", f"{field}: {url} became a link after it was checked; links are "
                              "not followed", field=field) from None
        raise _unreadable(field, url, e.strerror or type(e).__name__) from None
    try:
        _check_still_there(fd, resolved, field, url)
        dest.mkdir(parents=True, exist_ok=True)
        mode = os.fstat(fd).st_mode
        if stat.S_ISREG(mode):
            target = dest / (os.path.basename(resolved) or "source")
            _copy_fd(fd, target, limits.max_dataset_bytes, field, url)
            return target
        if not stat.S_ISDIR(mode):
            raise IngestError("source_not_found", f"{field}: {url} is neither a file nor a folder", field=field)
        return _copy_folder(fd, dest / "folder", limits, field, url)
    except OSError as e:
        raise _unreadable(field, url, e.strerror or type(e).__name__) from None
    finally:
        os.close(fd)


def _copy_folder(dir_fd: int, dest: Path, limits: IngestLimits, field: str, url: str) -> Path:
    """The folder's plain files (not its sub-folders), each opened relative to the folder's fd."""
    dest.mkdir(exist_ok=True)
    budget = limits.max_dataset_bytes
    with os.scandir(dir_fd) as entries:
        names = sorted((e.name, e.is_symlink(), e.is_file(follow_symlinks=False)) for e in entries)
    for name, is_link, is_file in names:
        if is_link:
            raise IngestError("uri_not_allowed", f"{field}: {url} holds a link ({name[:100]!r}); links are not "
                              "followed", field=field)
        if not is_file:
            continue
        fd = os.open(name, os.O_RDONLY | _NOFOLLOW, dir_fd=dir_fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _changed(field, url)
            budget -= _copy_fd(fd, dest / name, budget, field, url)
        finally:
            os.close(fd)
    return dest
