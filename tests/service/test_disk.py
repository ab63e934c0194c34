"""What counts as a full disk, and the free space of a folder that may not exist yet."""
from __future__ import annotations

import errno
import shutil
import sqlite3
from pathlib import Path

import sqlalchemy.exc

from service.disk import free_bytes, is_disk_full


class _PgDiskFull(Exception):
    sqlstate = "53100"  # what psycopg's errors.DiskFull carries


def test_disk_full_errors_are_recognised_and_others_are_not():
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert is_disk_full(sqlalchemy.exc.OperationalError("COMMIT", {}, sqlite3.OperationalError("database or disk is full")))
    assert is_disk_full(sqlalchemy.exc.OperationalError("INSERT", {}, _PgDiskFull("could not extend file")))
    assert not is_disk_full(OSError(errno.EIO, "Input/output error"))
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))
    assert not is_disk_full(sqlalchemy.exc.OperationalError("SELECT 1", {}, sqlite3.OperationalError("no such table")))
    assert not is_disk_full(ValueError("No space left on device"))  # words alone are not the error


def test_a_disk_full_error_anywhere_in_the_chain_counts():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("saving the adapter failed") from exc
    except RuntimeError as exc:
        assert is_disk_full(exc)


def test_free_bytes_of_a_folder_not_made_yet_is_its_parents(tmp_path: Path):
    # the same filesystem: equal but for what other processes wrote in between (16 MiB of slack)
    assert abs(free_bytes(tmp_path / "not" / "yet") - shutil.disk_usage(tmp_path).free) < 1 << 24
