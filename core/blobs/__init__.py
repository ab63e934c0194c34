"""The blob store: one interface (`BlobStore`), a local and an S3-compatible implementation."""
from core.blobs.base import BlobInfo, BlobNotFound, BlobRef, BlobStore, check_sha256
from core.blobs.local import LocalBlobStore

__all__ = ["BlobInfo", "BlobNotFound", "BlobRef", "BlobStore", "LocalBlobStore", "check_sha256"]
