"""Downloads: a streamed body to a file (complete or absent under its name), and a checkpoint's
adapter resumed with Range/If-Range and verified against its sha256."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from service.client.errors import ChecksumMismatch
from service.client.http import Http
from service.client.models import Checkpoint

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Download:
    path: Path
    size: int
    downloaded: int = 0  # bytes fetched by this call
    resumed_at: int | None = None  # the byte a partial file was resumed from
    already_complete: bool = False


def _copy(response: Any, f: BinaryIO) -> int:
    n = 0
    for chunk in response.iter_bytes(CHUNK):
        f.write(chunk)
        n += len(chunk)
    return n


def download_to(http: Http, path: str, dest: str | Path | BinaryIO, **kwargs: Any) -> int:
    """Stream GET `path` into `dest`; a path is written as `<name>.part`, then renamed. Returns bytes."""
    with http.stream("GET", path, **kwargs) as response:
        if not isinstance(dest, (str, Path)):
            return _copy(response, dest)
        out = Path(dest)
        part = out.with_name(out.name + ".part")
        with part.open("wb") as f:
            n = _copy(response, f)
    part.replace(out)  # a complete file or none under the final name
    return n


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download_checkpoint(http: Http, ckpt: Checkpoint, out: Path) -> Download:
    """Fetch into `out.part` (resuming what is there when the ETag still matches), verify, rename."""
    sha, size = ckpt.sha256, ckpt.size_bytes
    if out.is_file() and out.stat().st_size == size and sha256_file(out) == sha:
        return Download(out, size, already_complete=True)
    part = out.with_name(out.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    if offset >= size:
        offset = 0  # as long as the blob or longer: not a prefix of it
    headers = {"Range": f"bytes={offset}-", "If-Range": f'"{sha}"'} if offset else {}
    with http.stream("GET", ckpt.content_url, headers=headers) as response:
        resumed = response.status_code == 206
        with part.open("ab" if resumed else "wb") as f:
            n = _copy(response, f)
    if sha256_file(part) != sha:
        part.unlink()
        raise ChecksumMismatch(f"{out} does not match sha256 {sha}; the partial file was removed, run again")
    part.replace(out)
    return Download(out, size, downloaded=n, resumed_at=offset if resumed else None)
