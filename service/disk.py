"""A full disk, recognised: the errors it raises, and the free space of the data directory.

A full disk shows up as an OSError (ENOSPC, or EDQUOT over a quota) from a file write, as
SQLite's "database or disk is full" (SQLITE_FULL), or as PostgreSQL's class-53 "disk_full"
(SQLSTATE 53100) from its server. Callers turn these into a 507 (the API) or a `disk_full` job
error (the workers) instead of an internal error.
"""
from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

from sqlalchemy.exc import DBAPIError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = "database or disk is full"
_PG_DISK_FULL = "53100"
#: What the user can do about it, in words every message repeats.
WAY_OUT = "free space under ADAPTINF_DATA_DIR (the service's data directory)"


def _is_full_one(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    if isinstance(exc, DBAPIError):
        exc = exc.orig or exc
    if isinstance(exc, sqlite3.OperationalError):
        return _SQLITE_FULL in str(exc)
    return getattr(exc, "sqlstate", None) == _PG_DISK_FULL or getattr(exc, "pgcode", None) == _PG_DISK_FULL


def is_disk_full(exc: BaseException) -> bool:
    """True when `exc`, or an exception it was raised from or while handling, says the disk is full
    (a library that catches ENOSPC and raises its own error often chains it only implicitly).
    Callers that know domain errors check those first: one raised meanwhile keeps its own code."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if _is_full_one(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def free_bytes(path: str | Path) -> int:
    """Bytes free to this process on the filesystem holding `path` (or its nearest existing parent)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free
