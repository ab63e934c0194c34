"""Size and count limits for one upload, validated when built."""
from __future__ import annotations

from dataclasses import dataclass, fields

_MiB = 1024**2
_GiB = 1024**3


@dataclass(frozen=True)
class IngestLimits:
    """Limits applied to an upload. Every field must be a positive int.

    Defaults fit LLaVA-style instruction data: a 665k-sample LLaVA mix is ~1 GB of JSON and its
    images are at most a few MB each (COCO/GQA/OCR-VQA), while a hostile upload stays bounded.
    """

    max_dataset_bytes: int = 2 * _GiB
    max_samples: int = 2_000_000
    # One sample's JSON text: the streaming readers hold one sample at a time, so this bounds
    # their memory (a LLaVA sample is a few KB; a whole book in one answer is ~1 MB).
    max_record_bytes: int = 16 * _MiB
    max_sample_id_chars: int = 300  # the samples.key column is String(300)
    max_images_per_sample: int = 32
    max_members: int = 200_000
    max_uncompressed_bytes: int = 32 * _GiB
    max_member_bytes: int = 64 * _MiB
    # One Parquet row group, uncompressed: the Parquet reader holds one at a time. HF's own writers
    # use 100 rows per group for image datasets (a few MB); pandas/pyarrow default to 1M rows.
    max_row_group_bytes: int = 1 * _GiB
    max_image_pixels: int = 64_000_000  # below Pillow's own 89.5M warning threshold
    # distinct record skills in one dataset: the dataset row keeps a count per skill and shows it
    max_skills: int = 1_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"IngestLimits.{f.name} must be a positive int, got {value!r}")


def limits_for(max_upload_bytes: int, max_record_bytes: int = IngestLimits.max_record_bytes) -> IngestLimits:
    """The limits the API and the ingest worker both apply: the dataset file may be as large as
    the upload limit (ADAPTINF_MAX_UPLOAD_BYTES) and one sample as large as
    ADAPTINF_MAX_RECORD_BYTES, so what the API accepts the worker accepts."""
    return IngestLimits(max_dataset_bytes=max_upload_bytes, max_record_bytes=max_record_bytes)
