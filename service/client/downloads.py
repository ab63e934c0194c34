"""Downloads: a streamed body to a file (complete or absent under its name), and a blob (a
checkpoint's adapter, a pool's FAISS index) resumed with Range/If-Range and verified against its
sha256."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import httpx
from httpx_retries import Retry

from service.client.errors import ApiError, ChecksumMismatch
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


def download_blob(http: Http, url: str, sha: str, size: int, out: Path, params: dict[str, Any] | None = None) -> Download:
    """Fetch the blob at `url` into `out.part` (resuming what is there when the ETag still
    matches), check it against `sha`, rename it to `out`."""
    if out.is_file() and out.stat().st_size == size and sha256_file(out) == sha:
        return Download(out, size, already_complete=True)
    part = out.with_name(out.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    if offset >= size:
        offset = 0  # as long as the blob or longer: not a prefix of it
    headers = {"Range": f"bytes={offset}-", "If-Range": f'"{sha}"'} if offset else {}
    with http.stream("GET", url, headers=headers, params=params) as response:
        resumed = response.status_code == 206
        with part.open("ab" if resumed else "wb") as f:
            n = _copy(response, f)
    if sha256_file(part) != sha:
        part.unlink()
        raise ChecksumMismatch(f"{out} does not match sha256 {sha}; the partial file was removed, run again")
    part.replace(out)
    return Download(out, size, downloaded=n, resumed_at=offset if resumed else None)


def download_checkpoint(http: Http, ckpt: Checkpoint, out: Path) -> Download:
    """The checkpoint's adapter tar.gz into `out`, resumed and verified (`download_blob`)."""
    return download_blob(http, ckpt.content_url, ckpt.sha256, ckpt.size_bytes, out)


@dataclass(frozen=True)
class IndexDownload(Download):
    """A pool's FAISS index file: which version, of which round, and its shape."""

    version_id: str = ""
    round_number: int = 0
    rows: int = 0
    dim: int | None = None
    kind: str = ""


def index_head(http: Http, url: str, round_number: int | None = None) -> httpx.Headers:
    """The index download's headers (HEAD). A HEAD refusal has no body, so its problem+json is
    asked of GET once, without retries (the HEAD already waited out any Retry-After)."""
    params = {"round": round_number} if round_number is not None else None
    try:
        return http.request("HEAD", url, params=params).headers
    except ApiError as refused:
        with http.stream("GET", url, params=params, extensions={"retry": Retry(total=0)}):
            pass  # raises the same refusal, with its body
        raise refused from None  # the version became servable meanwhile: the caller may ask again


def download_index(http: Http, pool_id: str, out: Path, round_number: int | None = None) -> IndexDownload:
    """The pool's index version (the latest round's, or `round_number`'s) into `out`, resumed and
    verified. HEAD names the version first, and the GET asks for that round's, so a round that
    ends meanwhile cannot swap the file under a resumed download."""
    url = f"/v1/pools/{quote(pool_id, safe='')}/index"
    head = index_head(http, url, round_number)
    sha, number = head["etag"].strip('"'), int(head["x-index-round"])
    got = download_blob(http, url, sha, int(head["content-length"]), out, params={"round": number})
    dim = head.get("x-index-dim")
    return IndexDownload(**vars(got), version_id=head["x-index-version"], round_number=number,
                         rows=int(head["x-index-rows"]), dim=int(dim) if dim else None, kind=head["x-index-kind"])
