"""Ingest rejections: one exception type carrying an error code, a user-actionable detail and
the HTTP status the API should answer with. No web framework here; `service/api` maps it."""
from __future__ import annotations

from typing import Any

# Every code this package raises, with its HTTP status: 400 the upload cannot be read at all,
# 413 a size or count limit was exceeded, 422 the content is readable but not acceptable.
ERROR_STATUS: dict[str, int] = {
    # dataset file
    "bad_encoding": 400,
    "malformed_json": 400,
    "unsupported_format": 400,
    "dataset_too_large": 413,
    "too_many_samples": 413,
    "record_too_large": 413,
    "invalid_record": 422,
    "invalid_sample_id": 422,
    "missing_conversations": 422,
    "invalid_conversations": 422,
    "invalid_turn": 422,
    "unknown_role": 422,
    "missing_assistant_turn": 422,
    "invalid_image_ref": 422,
    "image_token_mismatch": 422,
    "too_many_images": 422,
    "duplicate_sample_id": 422,
    "invalid_skill": 422,
    "too_many_skills": 413,
    "empty_dataset": 422,
    # Parquet files and Hugging Face dataset directories
    "corrupt_dataset": 400,
    "row_group_too_large": 413,
    "unsupported_column": 422,
    "compressed_stream": 422,
    # datasets by reference (s3:// or file:// URIs)
    "invalid_uri": 422,
    "uri_not_allowed": 403,
    "source_not_found": 422,
    "source_unreadable": 502,
    "source_changed": 409,
    # images archive
    "unsupported_archive": 400,
    "corrupt_archive": 400,
    "archive_too_large": 413,
    "member_too_large": 413,
    "too_many_members": 413,
    "unsafe_archive_member": 422,
    "duplicate_archive_member": 422,
    "encrypted_archive_member": 422,
    # images
    "missing_image": 422,
    "ambiguous_image": 422,
    "corrupt_image": 422,
    "unsupported_image_format": 422,
    "image_too_large": 413,
}

#: The attributes that say where an error is; the API copies them into problem+json.
LOCATION_KEYS = ("line", "row_group", "row", "shard", "sample_id", "field", "member")


class IngestError(Exception):
    """A rejected upload.

    Args:
        code: short snake_case error code, a key of ERROR_STATUS.
        detail: what is wrong and where (line, sample id, field, member), for the user.
        line: 1-based line in the dataset file, when known.
        sample_id: the sample's key, when the error belongs to one sample.
        field: the offending field path inside the record, e.g. "conversations[2].from".
        member: the archive member or image name involved.
        row_group, row: 0-based Parquet row group and row inside it, when known.
        shard, row: the Arrow file of a Hugging Face dataset directory and the 0-based row in it.
    """

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        line: int | None = None,
        sample_id: str | None = None,
        field: str | None = None,
        member: str | None = None,
        row_group: int | None = None,
        row: int | None = None,
        shard: str | None = None,
    ) -> None:
        if code not in ERROR_STATUS:
            raise ValueError(f"IngestError.code must be one of ERROR_STATUS, got {code!r}")
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.line = line
        self.sample_id = sample_id
        self.field = field
        self.member = member
        self.row_group = row_group
        self.row = row
        self.shard = shard

    @property
    def status(self) -> int:
        return ERROR_STATUS[self.code]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored as the dataset's error, and the problem+json extension members)."""
        out: dict[str, Any] = {"code": self.code, "detail": self.detail, "status": self.status}
        for key in LOCATION_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out

    def __repr__(self) -> str:
        return f"IngestError({self.code!r}, {self.detail!r})"


class DatasetError(IngestError):
    """The records file is unreadable or a record is unacceptable."""


class ArchiveError(IngestError):
    """The images archive is unreadable, unsafe or over a limit."""


class ImageError(IngestError):
    """A referenced image is missing, undecodable or too large."""
