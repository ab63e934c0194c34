"""Datasets by reference: `s3://bucket/key` or `file:///path` URIs under the prefixes the operator
allows (ADAPTINF_INGEST_ALLOWED_PREFIXES; none by default).

Only these two schemes exist here, so a URI can never make the service fetch an arbitrary URL
(no http: no SSRF). A file:// path is resolved (symlinks and '..') before the prefix check, and
prefixes match on whole path segments (`/data/in` allows `/data/in/x`, not `/data/inbox`); the
worker resolves and checks again, then copies the source through descriptors opened without
following links (local_copy.py), so a link changed after either check cannot lead it outside. s3:// objects are read with boto3 at ADAPTINF_S3_ENDPOINT_URL.
"""
from __future__ import annotations

import os
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import IngestError
from .limits import IngestLimits
from .local_copy import copy_local

SETTING = "ADAPTINF_INGEST_ALLOWED_PREFIXES"
SCHEMES = ("s3", "file")


@dataclass(frozen=True)
class SourceRef:
    """A parsed reference: (scheme s3, bucket, key) or (scheme file, path)."""

    scheme: str
    bucket: str = ""
    key: str = ""  # s3: no leading slash; file: the absolute path

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.scheme == "s3" else f"file://{self.key}"

    def within(self, prefix: SourceRef) -> bool:
        """Whether this reference lies under `prefix`, on whole path segments."""
        if self.scheme != prefix.scheme or self.bucket != prefix.bucket:
            return False
        base = prefix.key.rstrip("/")
        return not base or self.key == base or self.key.startswith(base + "/")


def parse_uri(uri: Any, field: str = "uri") -> SourceRef:
    """An s3:// or file:// URI, or IngestError('invalid_uri') naming `field`."""
    def bad(why: str) -> IngestError:
        return IngestError("invalid_uri", f"{field}: {why}", field=field)

    if not isinstance(uri, str) or not uri.strip():
        raise bad("must be a non-empty s3:// or file:// URI")
    if "\x00" in uri or len(uri) > 2048:
        raise bad("must be at most 2048 characters, without NUL")
    try:
        parts = urlsplit(uri.strip())
    except ValueError as e:  # e.g. an unclosed '[' of an IPv6 host
        raise bad(f"is not a URI: {e}") from None
    if parts.scheme not in SCHEMES:
        raise bad(f"scheme {parts.scheme + '://' if parts.scheme else '(none)'} is not accepted: only s3:// and "
                  "file:// sources can be read (nothing is downloaded over http)")
    if parts.query or parts.fragment:
        raise bad("takes no query or fragment")
    path = unquote(parts.path)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise bad(f"file:// URIs name a path on the server; host {parts.netloc!r} is not accepted")
        if not path.startswith("/"):
            raise bad("a file:// URI needs an absolute path (file:///data/...)")
        return SourceRef("file", key=path)
    segments = [s for s in path.split("/") if s]
    if not parts.netloc:
        raise bad("an s3:// URI needs a bucket (s3://bucket/key)")
    if any(s in (".", "..") for s in segments):
        raise bad("an s3:// key may not hold '.' or '..' segments")
    return SourceRef("s3", bucket=parts.netloc, key="/".join(segments) + ("/" if path.endswith("/") else ""))


def parse_prefixes(values: list[str]) -> list[SourceRef]:
    """The allowed prefixes (ValueError naming the setting): file:// ones resolved as paths are."""
    out = []
    for value in values:
        try:
            ref = parse_uri(value, SETTING)
        except IngestError as e:
            raise ValueError(f"{SETTING}: {value!r}: {e.detail.split(': ', 1)[1]}") from None
        out.append(SourceRef("file", key=os.path.realpath(ref.key)) if ref.scheme == "file" else ref)
    return out


def resolve_allowed(uri: Any, prefixes: list[SourceRef], field: str = "uri") -> SourceRef:
    """The reference, file paths resolved, if it lies under an allowed prefix; else
    IngestError('uri_not_allowed') naming the setting."""
    ref = parse_uri(uri, field)
    if ref.scheme == "file":
        ref = SourceRef("file", key=os.path.realpath(ref.key))  # symlinks and '..' resolved first
    if not any(ref.within(p) for p in prefixes):
        allowed = ", ".join(p.url for p in prefixes) if prefixes else "none (the setting is empty)"
        raise IngestError("uri_not_allowed", f"{field}: {uri!r} is not under a prefix the server allows "
                          f"({SETTING}: {allowed})", field=field)
    return ref


# ---- looking and reading ------------------------------------------------------------------------


def _not_found(ref: SourceRef, field: str, what: str = "does not exist") -> IngestError:
    return IngestError("source_not_found", f"{field}: {ref.url} {what}", field=field)


@contextmanager
def local_io(ref: SourceRef, field: str) -> Iterator[None]:
    """A file:// path the server may not read (permissions, a vanished file, an I/O error) is the
    source's problem, not the server's: source_not_found / source_unreadable naming `field`."""
    try:
        yield
    except FileNotFoundError:
        raise _not_found(ref, field) from None
    except OSError as e:
        raise IngestError("source_unreadable", f"{field}: {ref.url} cannot be read by the server "
                          f"({e.strerror or type(e).__name__})", field=field) from None


def source_size(ref: SourceRef, field: str, endpoint_url: str = "") -> tuple[int, bool]:
    """(bytes, is a folder) of a reference; source_not_found when it is neither a file nor a folder."""
    if ref.scheme == "file":
        path = Path(ref.key)
        with local_io(ref, field):
            if path.is_dir():
                return sum(p.stat().st_size for p in path.iterdir() if p.is_file()), True
            if not path.is_file():
                raise _not_found(ref, field)
            return path.stat().st_size, False
    objects, is_dir = _s3_objects(_client(endpoint_url), ref, field)
    return sum(size for _, size, _ in objects), is_dir


def _s3_objects(s3: Any, ref: SourceRef, field: str) -> tuple[list[tuple[str, int, str]], bool]:  # noqa: ANN401
    """((key, size, etag) of each object, is a folder) of an s3:// reference."""
    key = ref.key.rstrip("/")
    if key and not ref.key.endswith("/"):
        try:
            head = _s3_call(lambda: s3.head_object(Bucket=ref.bucket, Key=key), ref, field)
            return [(key, int(head["ContentLength"]), str(head.get("ETag", "")))], False
        except IngestError as e:
            if e.code != "source_not_found":
                raise
    listed = _s3_list(s3, ref, field)
    if not listed:
        raise _not_found(ref, field, "is neither an object nor a folder holding any")
    return listed, True


def read_head(ref: SourceRef, field: str, endpoint_url: str = "", n: int = 512) -> bytes:
    """The first `n` bytes of a file reference (for format sniffing)."""
    if ref.scheme == "file":
        with local_io(ref, field), open(ref.key, "rb") as f:
            return f.read(n)
    s3 = _client(endpoint_url)
    got = _s3_call(lambda: s3.get_object(Bucket=ref.bucket, Key=ref.key, Range=f"bytes=0-{n - 1}"), ref, field)
    return got["Body"].read()


def fetch_source(ref: SourceRef, dest: Path, field: str, limits: IngestLimits, endpoint_url: str = "") -> Path:
    """A local copy in `dest` to read the reference from: of the file or flat folder (file://,
    through link-refusing descriptors), or a download (s3://: the object, or a folder's objects
    one level deep)."""
    if ref.scheme == "file":
        return copy_local(ref.key, ref.url, dest, field, limits)
    s3 = _client(endpoint_url)
    objects, is_dir = _s3_objects(s3, ref, field)
    size = sum(n for _, n, _ in objects)
    if size > limits.max_dataset_bytes:
        raise IngestError("dataset_too_large", f"{field}: {ref.url} holds {size} bytes, over the limit of "
                          f"{limits.max_dataset_bytes}", field=field)
    folder = dest / "folder" if is_dir else dest
    folder.mkdir(parents=True, exist_ok=True)
    for key, n, etag in objects:
        target = folder / (posixpath.basename(key) or "source")
        _download(s3, ref, key, n, etag, target, field)
    return folder if is_dir else target


def _download(s3: Any, ref: SourceRef, key: str, size: int, etag: str,  # noqa: ANN401 - a boto3 client
              target: Path, field: str) -> None:
    """One object, as listed: GetObject with If-Match on the listed ETag (a replaced object is
    source_changed, 412), and never more bytes than the listed size. Not download_file: its
    transfer manager accepts no IfMatch, and it would write whatever size the object has now."""
    extra = {"IfMatch": etag} if etag else {}
    got = _s3_call(lambda: s3.get_object(Bucket=ref.bucket, Key=key, **extra), ref, field)
    written = 0
    with open(target, "wb") as out:
        while chunk := _s3_call(lambda: got["Body"].read(min(1 << 20, size - written + 1)), ref, field):
            written += len(chunk)
            if written > size:
                break
            out.write(chunk)
    got["Body"].close()
    if written != size:
        raise _changed(ref, field)


def _changed(ref: SourceRef, field: str) -> IngestError:
    return IngestError("source_changed", f"{field}: {ref.url} changed while it was being read; ingest it again "
                       "once it stays put", field=field)


def _s3_list(s3: Any, ref: SourceRef, field: str) -> list[tuple[str, int, str]]:  # noqa: ANN401
    """The objects directly in the folder `ref` names (not in its sub-folders)."""
    prefix = ref.key.rstrip("/") + "/" if ref.key.strip("/") else ""
    out: list[tuple[str, int, str]] = []
    pages = _s3_call(lambda: s3.get_paginator("list_objects_v2").paginate(Bucket=ref.bucket, Prefix=prefix,
                                                                           Delimiter="/"), ref, field)
    for page in _s3_call(lambda: list(pages), ref, field):
        out.extend((o["Key"], int(o["Size"]), str(o.get("ETag", ""))) for o in page.get("Contents", [])
                   if o["Key"] != prefix)
    return out


def _client(endpoint_url: str) -> Any:  # noqa: ANN401 - a boto3 S3 client
    from core.blobs.s3_io import s3_client  # boto3 loads only for an s3:// source

    return s3_client(endpoint_url)


def _s3_call(fn, ref: SourceRef, field: str):  # noqa: ANN001, ANN202
    """Run a boto3 call; a missing object is source_not_found, anything else source_unreadable."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn()
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            raise _not_found(ref, field) from None
        if code in ("412", "PreconditionFailed"):  # If-Match: the object was replaced since it was listed
            raise _changed(ref, field) from None
        raise IngestError("source_unreadable", f"{field}: {ref.url} cannot be read ({code or 'S3 error'}); check "
                          "the server's S3 credentials and ADAPTINF_S3_ENDPOINT_URL", field=field) from None
    except BotoCoreError as e:
        raise IngestError("source_unreadable", f"{field}: {ref.url} cannot be read: {type(e).__name__}",
                          field=field) from None
