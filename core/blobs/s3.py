"""The S3 blob store: each blob an object `<prefix>/ab/cd/<sha256>` in an S3-compatible bucket.

Built on boto3: AWS's own SDK, already in the stack; its managed transfers (`upload_file`) split
large files into parallel multipart uploads and retry parts, `get_object(Range=...)` serves
seeks, and MinIO, R2, Ceph and moto speak the same API. fsspec/s3fs would bring aiobotocore,
which pins botocore (and so boto3) to a narrow range.

Writes. The key is the content's sha256, so a put first spools the stream to a local temp file
while hashing it, then uploads the file. An object already under the key is reused (no upload;
its LastModified refreshed by a copy onto itself, so `adaptinf gc`'s grace period covers it)
only when it is known to be intact: this process hashed that very version (ETag + LastModified).
Otherwise the content is uploaded again, which replaces a corrupt object (putting the same
content again repairs it, as with the local store). Hashing the stored copy instead would
download as many bytes as the upload sends, and S3 bills downloads, not uploads.

Reads. `open` streams (ranged GETs, seekable). `verify` downloads the object into the local
cache (core/blobs/cache.py) while hashing it, so a `materialize` after it costs nothing; a
version once hashed is remembered by ETag + LastModified and only HEADed again. Unlike a file's
mtime, neither can stay the same across a rewrite, and bit rot inside S3 is S3's to catch.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from botocore.exceptions import ClientError

from core.blobs.base import (SHA256_RE, BlobCorrupt, BlobInfo, BlobNotFound, BlobRef, BlobStore,
                             BlobStoreUnavailable, check_sha256)
from core.blobs.cache import BlobCache
from core.blobs.location import S3Location
from core.blobs.s3_io import (NOT_FOUND_CODES, VERIFIED, ObjectReader, Version, error_code, s3_client,
                              translated_errors, version_of)
from core.files import CHUNK_SIZE, copy_hashing, hash_stream

log = logging.getLogger(__name__)

#: sweep_tmp never aborts a multipart upload started less than this ago, whatever the grace.
MIN_UPLOAD_AGE_S = 3600.0
MAX_COPY_BYTES = 5 * 1024**3  # CopyObject's limit; larger objects are copied in parts


class S3BlobStore(BlobStore):
    """Blobs in a bucket, with a bounded local cache for `materialize`."""

    remote = True

    def __init__(self, url: str, *, cache_dir: str | Path, endpoint_url: str = "",
                 cache_max_bytes: int = 20 * 1024**3, cache_keep_s: float = 24 * 3600) -> None:
        self.loc = S3Location.parse(url)
        self.endpoint_url = endpoint_url
        self.cache = BlobCache(cache_dir, max_bytes=cache_max_bytes, keep_s=cache_keep_s)
        self._bucket_seen = False

    @property
    def location(self) -> str:
        return self.loc.url

    @property
    def _s3(self) -> Any:  # noqa: ANN401 - a boto3 S3 client
        return s3_client(self.endpoint_url)

    def _errors(self):  # noqa: ANN202 - a context manager
        return translated_errors(self.loc, self.endpoint_url)

    def _key(self, sha256: str) -> str:
        return self.loc.key(check_sha256(sha256))

    # ---- what the store knows -----------------------------------------------------------------

    def check(self) -> None:
        with self._errors():
            try:
                self._s3.head_bucket(Bucket=self.loc.bucket)
            except ClientError as exc:
                if error_code(exc) not in NOT_FOUND_CODES:
                    raise
                # HEAD has no body, so a missing bucket is a bare 404: name it as list would.
                raise BlobStoreUnavailable(f"the bucket of {self.loc.url} (ADAPTINF_BLOB_STORE) does not exist "
                                           f"at {self.endpoint_url or 'AWS S3'}: create it, or fix "
                                           "ADAPTINF_BLOB_STORE") from None
        self._bucket_seen = True

    def _head(self, sha256: str) -> dict[str, Any] | None:
        key = self._key(sha256)
        try:
            with self._errors():
                head = self._s3.head_object(Bucket=self.loc.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) not in NOT_FOUND_CODES:
                raise
            if not self._bucket_seen:
                self.check()  # a missing bucket answers HEAD with the same 404 as a missing key
            return None
        self._bucket_seen = True
        return head

    def _head_or_raise(self, sha256: str) -> dict[str, Any]:
        head = self._head(sha256)
        if head is None:
            raise BlobNotFound(f"blob {sha256} not found")
        return head

    def exists(self, sha256: str) -> bool:
        return self._head(sha256) is not None

    def size(self, sha256: str) -> int:
        return int(self._head_or_raise(sha256)["ContentLength"])

    def stat(self, sha256: str) -> BlobInfo:
        head = self._head_or_raise(sha256)
        return BlobInfo(sha256, int(head["ContentLength"]), head["LastModified"].timestamp())

    def list_blobs(self) -> Iterator[BlobInfo]:
        prefix = self.loc.key_prefix
        with self._errors():
            for page in self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.loc.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    sha = obj["Key"].rpartition("/")[2]
                    if SHA256_RE.match(sha) and obj["Key"] == self.loc.key(sha):
                        yield BlobInfo(sha, int(obj["Size"]), obj["LastModified"].timestamp())
        self._bucket_seen = True

    # ---- integrity ----------------------------------------------------------------------------

    def _memo_key(self, sha256: str) -> tuple[str, str, str]:
        return (self.endpoint_url, self.loc.bucket, self._key(sha256))

    def _remember(self, sha256: str, version: Version) -> None:
        VERIFIED.remember(self._memo_key(sha256), version)

    def _forget(self, sha256: str) -> None:
        VERIFIED.forget(self._memo_key(sha256))

    def _known_intact(self, sha256: str, head: dict[str, Any]) -> bool:
        return VERIFIED.get(self._memo_key(sha256)) == version_of(head)

    def _fetch(self, sha256: str, head: dict[str, Any]) -> Path | None:
        """Download the version `head` describes into the cache, hashing it on the way: the
        cached path when it hashes to its name, None (nothing cached) when it does not."""
        fd, tmp = self.cache.new_tmp("get.")
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                try:
                    with self._errors():
                        body = self._s3.get_object(Bucket=self.loc.bucket, Key=self._key(sha256),
                                                   IfMatch=head["ETag"])["Body"]
                except ClientError as exc:
                    if error_code(exc) in NOT_FOUND_CODES or error_code(exc) in ("PreconditionFailed", "412"):
                        return None  # deleted or replaced since the HEAD: not the version asked about
                    raise
                with body:
                    while chunk := body.read(CHUNK_SIZE):
                        h.update(chunk)
                        out.write(chunk)
            if h.hexdigest() != sha256:
                self._forget(sha256)
                return None
            self._remember(sha256, version_of(head))
            return self.cache.install(tmp, sha256)
        finally:
            tmp.unlink(missing_ok=True)

    def verify(self, sha256: str) -> bool:
        """True when the object exists and its content hashes to its name (downloaded and hashed
        once per version of the object; the copy stays in the local cache)."""
        head = self._head(sha256)
        if head is None:
            self._forget(sha256)
            return False
        return self._known_intact(sha256, head) or self._fetch(sha256, head) is not None

    # ---- reads --------------------------------------------------------------------------------

    def materialize(self, sha256: str) -> Path:
        """The local cache's copy, downloaded and checked first if this machine has none.
        BlobNotFound when absent; BlobCorrupt when the object no longer hashes to its name."""
        cached = self.cache.get(sha256)
        if cached is not None:
            return cached
        path = self._fetch(sha256, self._head_or_raise(sha256))
        if path is None:
            if not self.exists(sha256):
                raise BlobNotFound(f"blob {sha256} not found")
            raise BlobCorrupt(f"blob {sha256} in {self.loc.url} no longer hashes to its name")
        return path

    def open(self, sha256: str) -> BinaryIO:
        bucket, key = self.loc.bucket, self._key(sha256)

        def get(**kwargs: Any) -> dict[str, Any]:
            with self._errors():
                return self._s3.get_object(Bucket=bucket, Key=key, **kwargs)

        try:
            first = get()
        except ClientError as exc:
            if error_code(exc) not in NOT_FOUND_CODES:
                raise
            if not self._bucket_seen:
                self.check()
            raise BlobNotFound(f"blob {sha256} not found") from None
        return io.BufferedReader(ObjectReader(get, first, sha256), buffer_size=CHUNK_SIZE)

    # ---- writes -------------------------------------------------------------------------------

    def _reuse(self, sha256: str) -> bool:
        """True when an intact object is already stored under the key; its LastModified is then
        refreshed. An object this process never hashed counts as unknown: it is uploaded again."""
        if VERIFIED.get(self._memo_key(sha256)) is None:
            return False  # no HEAD needed to know that
        head = self._head(sha256)
        if head is None or not self._known_intact(sha256, head):
            return False
        return self._touch(sha256, head)

    def _upload(self, path: Path, sha256: str) -> None:
        if self._reuse(sha256):
            return
        self._forget(sha256)
        with self._errors():
            # Managed transfer: multipart (parallel parts, each retried) above 8 MiB.
            self._s3.upload_file(str(path), self.loc.bucket, self._key(sha256),
                                 ExtraArgs={"Metadata": {"sha256": sha256}})

    def put_bytes(self, data: bytes) -> BlobRef:
        sha = hashlib.sha256(data).hexdigest()
        if not self._reuse(sha):
            self._forget(sha)
            with self._errors():
                self._s3.put_object(Bucket=self.loc.bucket, Key=self._key(sha), Body=data, Metadata={"sha256": sha})
        return BlobRef(sha, len(data))

    def put_stream(self, fileobj: BinaryIO) -> BlobRef:
        """Spool to a local temp file while hashing (the key is the hash), then upload it; the
        spooled file then becomes the local cache's copy."""
        fd, tmp = self.cache.new_tmp("put.")
        try:
            with os.fdopen(fd, "wb") as out:
                sha, size = copy_hashing(fileobj, out)
            self._upload(tmp, sha)
            self._keep(tmp, sha)
            return BlobRef(sha, size)
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, path: str | Path, *, move: bool = False) -> BlobRef:
        """Store a local file; with `move=True` the file becomes the local cache's copy."""
        path = Path(path)
        if not move:  # the caller may still write to it: upload a copy taken while hashing
            with path.open("rb") as f:
                return self.put_stream(f)
        with path.open("rb") as f:
            sha = hash_stream(f)
        size = path.stat().st_size
        self._upload(path, sha)
        self._keep(path, sha)
        return BlobRef(sha, size)

    def _keep(self, path: Path, sha256: str) -> None:
        """Make a file just uploaded the cache's copy (a later materialize here is then free);
        the upload succeeded, so a cache that cannot take it (disk full) only costs that."""
        try:
            self.cache.install(path, sha256)
        except OSError as exc:
            log.warning("blob %s stored, but not kept in the local cache: %s", sha256, exc)
            path.unlink(missing_ok=True)

    def touch(self, sha256: str) -> None:
        if not self._touch(sha256, self._head_or_raise(sha256)):
            raise BlobNotFound(f"blob {sha256} not found")

    def _touch(self, sha256: str, head: dict[str, Any]) -> bool:
        """Copy the object onto itself (S3 has no utime) so its LastModified is now; False when
        it was deleted or replaced since `head`."""
        key = self._key(sha256)
        source = {"Bucket": self.loc.bucket, "Key": key}
        args = {"MetadataDirective": "REPLACE", "Metadata": {"sha256": sha256}, "CopySourceIfMatch": head["ETag"]}
        was_intact = self._known_intact(sha256, head)
        try:
            with self._errors():
                if int(head["ContentLength"]) > MAX_COPY_BYTES:
                    self._s3.copy(source, self.loc.bucket, key, ExtraArgs=args)  # managed: in parts
                    self._forget(sha256)  # a copy in parts gets a new ETag we are not told
                    return True
                result = self._s3.copy_object(Bucket=self.loc.bucket, Key=key, CopySource=source, **args)
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND_CODES or error_code(exc) in ("PreconditionFailed", "412"):
                self._forget(sha256)
                return False
            raise
        if was_intact:  # a server-side copy of a verified version holds the same bytes
            self._remember(sha256, version_of(result["CopyObjectResult"]))
        return True

    def delete(self, sha256: str) -> None:
        with self._errors():
            self._s3.delete_object(Bucket=self.loc.bucket, Key=self._key(sha256))
        self._forget(sha256)
        self.cache.discard(sha256)

    def sweep_tmp(self, older_than: float, *, delete: bool) -> list[str]:
        """Multipart uploads of this store's blobs that were started before `older_than` (and at
        least MIN_UPLOAD_AGE_S ago) and never completed (a writer that crashed mid-upload: S3 keeps
        and bills their parts), and this machine's stale cache temp files.

        Only keys of the blob layout (``<prefix>ab/cd/<sha256>``, as list_blobs reads them) are
        touched: a store without a prefix shares its bucket with whatever else lives there, and
        another application's upload is not ours to abort. The age floor keeps `gc --grace-hours 0`
        from aborting an upload in flight (a multi-GB blob takes minutes).
        """
        stale = []
        started_before = min(older_than, time.time() - MIN_UPLOAD_AGE_S)
        with self._errors():
            pages = self._s3.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.loc.bucket, Prefix=self.loc.key_prefix)
            for page in pages:
                for upload in page.get("Uploads", []):
                    sha = upload["Key"].rpartition("/")[2]
                    if not (SHA256_RE.match(sha) and upload["Key"] == self.loc.key(sha)):
                        continue  # not one of this store's blobs
                    if upload["Initiated"].timestamp() >= started_before:
                        continue
                    stale.append(f"s3://{self.loc.bucket}/{upload['Key']} (multipart upload {upload['UploadId']})")
                    if delete:
                        try:
                            self._s3.abort_multipart_upload(Bucket=self.loc.bucket, Key=upload["Key"],
                                                            UploadId=upload["UploadId"])
                        except ClientError as exc:
                            if error_code(exc) != "NoSuchUpload":  # finished or aborted meanwhile
                                raise
        return stale + self.cache.sweep_tmp(older_than, delete=delete)
