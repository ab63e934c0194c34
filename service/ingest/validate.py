"""Validate a whole dataset (records in any reader's format + optional images archive), all-or-nothing.

Checks run in this order and the first failure is raised as an IngestError: every record in file
order (syntax, shape, roles, image tokens; an image a row embeds is spooled as it is read),
duplicate sample ids, an empty dataset, the archive's safety and limits, every image reference
against the archive, then each referenced image's decode (in archive order, then the embedded
ones). The API runs the "list" mode on a JSON upload (records and the archive's listing: no image
is extracted or decoded); the ingest worker runs "keep", which decodes each image once.
"""
from __future__ import annotations

import os
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .archives import iter_extract, list_archive
from .errors import DatasetError, ImageError, IngestError
from .formats import ParsedSample, content_hash
from .location import Location
from .images import ImageInfo, check_image
from .limits import IngestLimits
from .names import MemberIndex
from .readers import EMBEDDED, RecordReader, SourceFormat, open_reader

__all__ = ["IngestLimits", "ImageMode", "ValidatedDataset", "ValidatedImage", "validate_upload"]

# keep: extract the referenced images into workdir/images, decode-check them and keep the files;
# check: the same, deleting each file once checked (disk use: one image at a time);
# list: only confirm each referenced image is in the archive listing (no extraction or decoding).
ImageMode = Literal["keep", "check", "list"]
IMAGES_SUBDIR = "images"


@dataclass(frozen=True)
class ValidatedImage:
    name: str  # archive member name
    path: Path | None  # extracted file under workdir/images; None in "check" mode
    sha256: str  # hex digest of the file's bytes: its blob id
    size: int  # bytes
    info: ImageInfo


@dataclass
class ValidatedDataset:
    samples: list[ParsedSample]  # [] when validated with keep_samples=False
    num_samples: int
    images: dict[str, ValidatedImage] = field(default_factory=dict)  # by member name; {} in "list" mode
    image_refs: dict[str, str] = field(default_factory=dict)  # dataset image reference -> member name
    content_hashes: dict[str, str] = field(default_factory=dict)  # sample key -> content_hash; {} in "list" mode
    # samples with images whose text lacked an IMAGE_TOKEN (placed before the first user turn), and the first of them
    tokens_placed: int = 0
    first_token_placed: str | None = None
    reader: RecordReader | None = None  # reads the samples again (the worker's write pass, without keep_samples)

    @property
    def num_images(self) -> int:
        """Distinct archive images referenced by the dataset."""
        return len(set(self.image_refs.values()))

    def images_of(self, sample: ParsedSample) -> list[ValidatedImage]:
        """The sample's images in IMAGE_TOKEN order (not available in "list" mode)."""
        return [self.images[self.image_refs[ref]] for ref in sample.image_refs]


def validate_upload(
    dataset_path: str | os.PathLike[str],
    archive_path: str | os.PathLike[str] | None,
    workdir: str | os.PathLike[str],
    limits: IngestLimits = IngestLimits(),
    *,
    image_mode: ImageMode = "keep",
    keep_samples: bool = True,
    fmt: SourceFormat | None = None,
) -> ValidatedDataset:
    """Parse and check everything; raise the first IngestError. The caller deletes `workdir`.

    keep_samples=False checks the same and raises the same first error, but keeps no sample (and
    no content hash): memory holds one sample, 8 bytes per sample id (16 while they are sorted),
    and each distinct image reference with its first user's id, line and label, not the file. The API validates an upload this way; the worker keeps them.
    """
    if image_mode not in ("keep", "check", "list"):
        raise ValueError(f"image_mode must be 'keep', 'check' or 'list', got {image_mode!r}")
    reader = open_reader(dataset_path, limits, workdir, fmt)
    samples, count, users, placed = _parse_unique(reader, limits, keep_samples)
    result = ValidatedDataset(samples, count, tokens_placed=placed[0], first_token_placed=placed[1], reader=reader)
    embedded = {ref: user for ref, user in users.items() if ref.startswith(EMBEDDED)}
    archived = {ref: user for ref, user in users.items() if not ref.startswith(EMBEDDED)}
    if archive_path is not None:
        index = MemberIndex(m.name for m in list_archive(archive_path, limits))
        result.image_refs = _resolve(archived, index)
    elif archived:
        ref, sample = next(iter(archived.items()))
        raise _missing(sample, ref, "but no images archive was uploaded")
    result.image_refs.update({key: key for key in embedded})
    if image_mode == "list":
        return result
    if archive_path is not None and archived:
        first_user = {result.image_refs[ref]: sample for ref, sample in reversed(archived.items())}
        dest = Path(workdir) / IMAGES_SUBDIR
        for member in iter_extract(archive_path, dest, limits, only=first_user.keys()):
            try:
                info = check_image(member.path, limits, name=member.name)
            except ImageError as e:
                sample = first_user[member.name]
                raise ImageError(e.code, f"{sample.describe()}: {e.detail}", sample_id=sample.key, member=e.member,
                                 **sample.loc.fields()) from None
            path: Path | None = member.path
            if image_mode == "check":
                member.path.unlink()
                path = None
            result.images[member.name] = ValidatedImage(member.name, path, member.sha256, member.size, info)
    for key, sample in embedded.items():  # images the rows carry, spooled by the reader
        image = reader.embedded[key]
        try:
            info = check_image(image.path, limits, name=sample.name)
        except ImageError as e:
            raise ImageError(e.code, f"{sample.describe()}: {e.detail}", sample_id=sample.key, member=e.member,
                             **sample.loc.fields()) from None
        path = image.path
        if image_mode == "check":
            image.path.unlink()
            path = None
        result.images[key] = ValidatedImage(sample.name, path, image.sha256, image.size, info)
    result.content_hashes = {
        s.key: content_hash(s, [img.sha256 for img in result.images_of(s)]) for s in samples
    }
    return result


@dataclass(frozen=True, slots=True)
class _User:
    """What an error about an image needs of the first sample using it (not the whole record)."""

    key: str
    loc: Location
    label: str
    name: str = ""  # the image's name in the record (how errors about an embedded image name it)

    @property
    def line(self) -> int | None:
        return self.loc.line

    def describe(self) -> str:
        return self.label


def _parse_unique(
    reader: RecordReader, limits: IngestLimits, keep: bool
) -> tuple[list[ParsedSample], int, dict[str, _User], tuple[int, str | None]]:
    """(the samples, or [] unless `keep`; their count; each image reference's first user; how many
    samples had an IMAGE_TOKEN placed for them, and the first one's label).

    Duplicate ids: with `keep`, found as they come; without, every id's 64-bit hash is kept and a
    second pass over the file (up to a failing record, if any) runs only when two hashes collide,
    to name the first duplicate exactly as the first way does."""
    samples: list[ParsedSample] = []
    first_at: dict[str, ParsedSample] = {}
    users: dict[str, _User] = {}
    skills: set[str] = set()
    hashes = array("q")
    count = 0
    placed, first_placed = 0, None
    try:
        for sample in reader.samples():
            if sample.skill is not None and sample.skill not in skills:
                skills.add(sample.skill)
                if len(skills) > limits.max_skills:
                    raise DatasetError(
                        "too_many_skills",
                        f"{sample.describe()} declares skill {sample.skill!r}: the dataset has more "
                        f"than {limits.max_skills} distinct skills",
                        sample_id=sample.key, field="skill", **sample.loc.fields(),
                    )
            count += 1
            if sample.placed_image_tokens:
                placed += 1
                first_placed = first_placed or sample.describe()
            if sample.image_names:
                label = sample.describe()
                for ref, name in zip(sample.image_refs, sample.image_names):
                    if ref not in users:
                        users[ref] = _User(sample.key, sample.loc, label, name)
            if keep:
                _check_unique(first_at, sample)
                samples.append(sample)
            else:
                hashes.append(hash(sample.key))
    except IngestError:
        if not keep:  # a duplicate id before the failing record came first: name it, as `keep` does
            _first_duplicate(reader, hashes, count)
        raise
    if not count:
        raise DatasetError("empty_dataset", "the dataset file contains no samples")
    if not keep:
        _first_duplicate(reader, hashes, count)
    return samples, count, users, (placed, first_placed)


def _first_duplicate(reader: RecordReader, hashes: array, upto: int) -> None:
    """Raise the first duplicate id among the first `upto` samples, if their id hashes collide."""
    ordered = np.sort(np.frombuffer(hashes, dtype=np.int64))
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return
    suspects, first_at = set(ordered[1:][same].tolist()), {}
    for k, sample in enumerate(reader.samples()):
        if k >= upto:
            return
        if hash(sample.key) in suspects:
            _check_unique(first_at, sample)


def _check_unique(first_at: dict[str, ParsedSample], sample: ParsedSample) -> None:
    earlier = first_at.setdefault(sample.key, sample)
    if earlier is not sample:
        raise DatasetError(
            "duplicate_sample_id",
            f"duplicate sample id {sample.key!r}: {earlier.describe()} and {sample.describe()}",
            sample_id=sample.key,
            field="id",
            **sample.loc.fields(),
        )


def _resolve(users: dict[str, _User], index: MemberIndex) -> dict[str, str]:
    refs = {}
    for ref, sample in users.items():
        found = index.lookup(ref)
        if not found:
            raise _missing(sample, ref, "which is not in the images archive")
        if len(found) > 1:
            shown = ", ".join(repr(c) for c in found[:3]) + (", ..." if len(found) > 3 else "")
            raise ImageError(
                "ambiguous_image",
                f"{sample.describe()}: image {ref!r} matches {len(found)} archive members ({shown}); "
                "reference it by its full path in the archive",
                sample_id=sample.key,
                member=ref[:300],
                **sample.loc.fields(),
            )
        refs[ref] = found[0]
    return refs


def _missing(sample: _User, ref: str, why: str) -> ImageError:
    return ImageError(
        "missing_image",
        f"{sample.describe()} references image {ref!r}, {why}",
        sample_id=sample.key,
        member=ref[:300],
        **sample.loc.fields(),
    )
