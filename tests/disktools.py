"""A real small filesystem for full-disk tests: a size-limited tmpfs, and a file that fills it."""
from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of `size` (e.g. "16m") on `path` for the block; skip where mounting is not
    allowed (not root, or a container without CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}); needs root")
    try:
        yield path
    finally:
        # lazy: a file still open (a SQLite connection a failing test left) must not keep it mounted
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Write a file in `directory` until its filesystem has no byte left; returns it (unlink to free)."""
    filler = directory / "filler.bin"
    block = b"\0" * (1 << 20)
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):  # big blocks first, then the last partial pages
            try:
                while True:
                    f.write(block[:size])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return filler
