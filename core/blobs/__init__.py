"""The blob store: one interface (`BlobStore`), a local and an S3-compatible implementation."""
from core.blobs.base import BlobCorrupt, BlobInfo, BlobNotFound, BlobRef, BlobStore, BlobStoreUnavailable, check_sha256
from core.blobs.local import LocalBlobStore

# S3BlobStore lives in core.blobs.s3, imported only where blobs are in S3 (it loads boto3).
__all__ = ["BlobCorrupt", "BlobInfo", "BlobNotFound", "BlobRef", "BlobStore", "BlobStoreUnavailable", "LocalBlobStore",
           "check_sha256"]
