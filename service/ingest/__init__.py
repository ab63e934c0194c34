"""Dataset parsing and validation (no database, no HTTP, no torch).

Formats are read by `readers/` (JSON, JSON Lines, Parquet, Hugging Face save_to_disk folders);
the API runs `upload_checks.check_upload` (cheap), the ingest worker `validate_upload` (decodes
each image once); `sources` resolves datasets by reference. Errors: `IngestError` (`.code`,
`.detail`, `.status`, `.to_dict()`, and where: line, row group and row, shard, sample id...).
"""
from .archives import ArchiveMember, ExtractedMember, detect_archive, iter_extract, list_archive
from .errors import ERROR_STATUS, ArchiveError, DatasetError, ImageError, IngestError
from .formats import ParsedSample, content_hash, detect_format, iter_samples
from .images import ALLOWED_FORMATS, ImageInfo, check_image
from .limits import IngestLimits, limits_for
from .validate import ImageMode, ValidatedDataset, ValidatedImage, validate_upload

__all__ = [
    "ALLOWED_FORMATS",
    "ERROR_STATUS",
    "ArchiveError",
    "ArchiveMember",
    "DatasetError",
    "ExtractedMember",
    "ImageError",
    "ImageInfo",
    "ImageMode",
    "IngestError",
    "IngestLimits",
    "limits_for",
    "ParsedSample",
    "ValidatedDataset",
    "ValidatedImage",
    "check_image",
    "content_hash",
    "detect_archive",
    "detect_format",
    "iter_extract",
    "iter_samples",
    "list_archive",
    "validate_upload",
]
