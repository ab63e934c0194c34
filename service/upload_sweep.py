"""Removes the temp folders of uploads cut off by a crash: at start-up and every few minutes.

A folder is stale when nothing in it was written for `stale_upload_seconds`: a live upload writes
its file as the body arrives (and the body read timeout ends a stalled one), so the newest mtime
in the folder, not the folder's own, tells a crash from a long upload. Several API processes may
share the work dir; each sweeps, and each spares the others' live uploads by the same rule.
"""
from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from service.config import Settings

log = logging.getLogger(__name__)


def _last_write(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for path in folder.rglob("*"):
        try:
            newest = max(newest, path.stat().st_mtime)
        except FileNotFoundError:  # removed by its request meanwhile
            pass
    return newest


def remove_stale_uploads(settings: Settings, now: float | None = None) -> list[str]:
    """Remove the upload folders with no write for `stale_upload_seconds`; their names."""
    uploads = settings.work_dir / "uploads"
    if not uploads.is_dir():
        return []
    cutoff = (now or time.time()) - settings.stale_upload_seconds
    removed = []
    for folder in uploads.iterdir():
        try:
            if _last_write(folder) < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder.name)
        except (FileNotFoundError, NotADirectoryError):
            pass
    if removed:
        log.info("removed %d stale upload folder(s): %s", len(removed), ", ".join(removed))
    return removed


async def sweep_uploads_forever(settings: Settings) -> None:
    """Every `upload_sweep_seconds`, remove stale upload folders; cancelled when the app stops."""
    while True:
        await asyncio.sleep(settings.upload_sweep_seconds)
        try:
            await run_in_threadpool(remove_stale_uploads, settings)
        except OSError:  # a full or failing disk: log it and try again next time
            log.exception("sweeping stale uploads failed")
