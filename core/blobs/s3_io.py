"""What the S3 blob store needs around boto3: one client per process, errors that name the
setting to fix, and a seekable reader over ranged GETs.

The reader is written here rather than taken from smart_open or s3fs (neither is in the stack;
s3fs pins aiobotocore/botocore tightly): it is a few dozen lines over `get_object(Range=...)`.
It must seek because `tarfile` seeks back to members it has listed.
"""
from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from core.blobs.base import BlobNotFound, BlobStoreUnavailable
from core.blobs.location import S3Location

#: Error codes that mean "these credentials may not do this" (S3 answers HEAD with a bare 403).
_CREDENTIAL_CODES = frozenset({"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                               "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled"})
_WRONG_REGION_CODES = frozenset({"301", "PermanentRedirect", "AuthorizationHeaderMalformed",
                                 "IllegalLocationConstraintException"})
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


Version = tuple[str, int]  # (ETag, LastModified in whole seconds: HEAD's HTTP date has no more)


def version_of(head: dict[str, Any]) -> Version:
    """One version of an object, from a HEAD, a listing or a CopyObjectResult."""
    return (str(head["ETag"]), int(head["LastModified"].timestamp()))


class VersionMemo:
    """Object versions this process hashed and found intact, keyed by (endpoint, bucket, key);
    bounded, the least recently used dropped first."""

    def __init__(self, max_entries: int = 65_536) -> None:
        self._memo: OrderedDict[tuple[str, str, str], Version] = OrderedDict()
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def get(self, key: tuple[str, str, str]) -> Version | None:
        with self._lock:
            return self._memo.get(key)

    def remember(self, key: tuple[str, str, str], version: Version) -> None:
        with self._lock:
            self._memo[key] = version
            self._memo.move_to_end(key)
            while len(self._memo) > self.max_entries:
                self._memo.popitem(last=False)

    def forget(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._memo.pop(key, None)


VERIFIED = VersionMemo()

_clients: dict[tuple[int, str], Any] = {}
_clients_lock = threading.Lock()


def s3_client(endpoint_url: str = "") -> Any:  # noqa: ANN401 - a boto3 S3 client
    """One client per process and endpoint (boto3 clients are thread-safe but not fork-safe: a
    Celery worker's children each make their own). Credentials and region come from boto3's
    standard chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance roles...)."""
    key = (os.getpid(), endpoint_url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                # Three tries: a blip is retried, an endpoint that is down is reported within seconds.
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5, read_timeout=60, max_pool_connections=32,
                # MinIO, R2 and moto are reached by a host name that has no per-bucket subdomains.
                s3={"addressing_style": "path"} if endpoint_url else None,
            )
            session = boto3.session.Session()
            region = None if session.region_name or endpoint_url == "" else "us-east-1"
            client = session.client("s3", endpoint_url=endpoint_url or None, region_name=region, config=config)
            _clients[key] = client
        return client


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def unavailable(exc: BaseException, location: S3Location, endpoint_url: str) -> BlobStoreUnavailable | None:
    """The BlobStoreUnavailable, naming the setting to fix, that `exc` (or an error it was raised
    from: boto3's managed upload wraps the ClientError) amounts to; None for other errors (a
    missing key, a failed precondition), which the caller handles."""
    where = f"{location.url} (ADAPTINF_BLOB_STORE)"
    endpoint = (f"the S3 endpoint {endpoint_url} (ADAPTINF_S3_ENDPOINT_URL)" if endpoint_url
                else "AWS S3 (ADAPTINF_S3_ENDPOINT_URL is empty)")
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ClientError):
            code = error_code(current)
            if code == "NoSuchBucket":
                return BlobStoreUnavailable(f"the bucket of {where} does not exist at {endpoint}: create it, "
                                            "or fix ADAPTINF_BLOB_STORE")
            if code in _CREDENTIAL_CODES:
                return BlobStoreUnavailable(
                    f"{endpoint} refused the credentials for {where} ({code}): check AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), and that they may list, read, write and delete "
                    "in the bucket")
            if code in _WRONG_REGION_CODES:
                return BlobStoreUnavailable(f"the bucket of {where} is in another region ({code}): set "
                                            "AWS_DEFAULT_REGION to the bucket's region")
            return None
        if isinstance(current, (NoCredentialsError, PartialCredentialsError)):
            return BlobStoreUnavailable(f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID and "
                                        "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
        if isinstance(current, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError)):
            return BlobStoreUnavailable(f"cannot reach {endpoint} for {where} ({type(current).__name__})")
        current = current.__cause__ or current.__context__
    return None


@contextmanager
def translated_errors(location: S3Location, endpoint_url: str) -> Iterator[None]:
    """Inside, an error that means "cannot use the bucket at all" becomes BlobStoreUnavailable."""
    try:
        yield
    except BlobStoreUnavailable:
        raise
    except Exception as exc:
        translated = unavailable(exc, location, endpoint_url)
        if translated is None:
            raise
        raise translated from exc


class ObjectReader(io.RawIOBase):
    """A seekable read-only view of one version of one object.

    Reads come from one streaming GET; a seek drops it and the next read starts a ranged GET at
    the new offset. Every GET after the first carries `IfMatch: <etag>`, so an object replaced
    while it is read fails the read instead of mixing two versions' bytes.
    """

    def __init__(self, get: Callable[..., dict[str, Any]], first: dict[str, Any], sha256: str) -> None:
        self._get, self._sha256 = get, sha256
        self._size, self._etag = int(first["ContentLength"]), first["ETag"]
        self._body: Any = first["Body"]
        self._pos = 0

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        pos = base + offset
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        if pos != self._pos:
            self._drop_body()
            self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:  # noqa: ANN401 - a writable buffer
        if self.closed:
            raise ValueError("read of a closed blob")
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        if self._body is None:
            try:
                self._body = self._get(Range=f"bytes={self._pos}-", IfMatch=self._etag)["Body"]
            except ClientError as exc:
                if error_code(exc) in NOT_FOUND_CODES:
                    raise BlobNotFound(f"blob {self._sha256} was deleted while being read") from None
                if error_code(exc) in ("PreconditionFailed", "412"):
                    raise OSError(f"blob {self._sha256} was replaced while being read") from None
                raise
        data = self._body.read(want)
        if not data:
            raise OSError(f"blob {self._sha256} ended {self._size - self._pos} bytes early")
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def _drop_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        self._drop_body()
        super().close()
