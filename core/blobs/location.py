"""`s3://bucket/prefix`, parsed and checked (no boto3 here: settings validate it at load)."""
from __future__ import annotations

import re
from dataclasses import dataclass

# S3's bucket naming rules (3-63 characters: lowercase letters, digits, dots, hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Location:
    """`s3://bucket/prefix`: where the blobs live. Keys are `<prefix>/ab/cd/<sha256>`."""

    bucket: str
    prefix: str  # no leading or trailing slash; "" for the bucket's root

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """Raises ValueError naming ADAPTINF_BLOB_STORE and what is wrong with `url`."""
        if not url.startswith("s3://"):
            raise ValueError(f"ADAPTINF_BLOB_STORE must be empty (the data directory) or s3://bucket[/prefix], "
                             f"got {url!r}")
        if "?" in url or "#" in url:
            raise ValueError(f"ADAPTINF_BLOB_STORE takes no query or fragment: {url!r}")
        bucket, _, rest = url[len("s3://"):].partition("/")
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise ValueError(f"ADAPTINF_BLOB_STORE names bucket {bucket!r}, which is not a valid S3 bucket name "
                             "(3-63 characters: lowercase letters, digits, dots, hyphens)")
        parts = [p for p in rest.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(f"ADAPTINF_BLOB_STORE's prefix may not hold '.' or '..' segments: {url!r}")
        return cls(bucket, "/".join(parts))

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def key_prefix(self) -> str:
        """What every blob key starts with ("" or "prefix/")."""
        return f"{self.prefix}/" if self.prefix else ""

    def key(self, sha256: str) -> str:
        return f"{self.key_prefix}{sha256[:2]}/{sha256[2:4]}/{sha256}"
