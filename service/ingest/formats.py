"""Records into ParsedSamples: the sample key, the normalised conversation, the content hash.

Readers (readers/) decode records from their formats; `iter_samples` reads a JSON or JSON Lines
file, the format this module once held alone.

Sample keys: the record's `id` (string or int) as a string; a record without `id` is keyed by its
1-based position in the file ("1", "2", ...), so such keys can clash with explicit ids (reported as
duplicates by validation).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from core.samples import Message

from .errors import DatasetError
from .limits import IngestLimits
from .location import Location
from .readers.jsonl import DatasetFormat, _iter_raw, detect_format, iter_records
from .records import Where, normalise_record, record_skill

__all__ = ["DatasetFormat", "ParsedSample", "content_hash", "detect_format", "iter_records", "iter_samples",
           "parse_record", "samples_of", "too_many_samples"]


@dataclass(frozen=True)
class ParsedSample:
    """One accepted record.

    Args:
        key: the sample id as a string (see module docstring for records without `id`).
        record: the original record, as uploaded.
        messages: the normalised conversation; one IMAGE_TOKEN per image, in image order.
        image_names: the image references as the record spells them, in IMAGE_TOKEN order.
        index: 1-based position in the file.
        line: 1-based line where the record starts (0 for a Parquet or Arrow row).
        skill: the record's own `skill`, None when it declares none.
        placed_image_tokens: IMAGE_TOKENs the record's text lacked, placed before its first user turn.
        loc: where the record sits (line, or row group / shard and row), for error details.
        image_keys: how validation finds each image, aligned with image_names: the name itself for an
            image of the images archive, an `EMBEDDED` key for one a Parquet or Arrow row carries.
    """

    key: str
    record: dict[str, Any]
    messages: list[Message]
    image_names: list[str]
    index: int = 0
    line: int = 0
    skill: str | None = None
    placed_image_tokens: int = 0
    loc: Location = Location()
    image_keys: tuple[str, ...] = ()

    @property
    def image_refs(self) -> list[str]:
        """The keys validation resolves this sample's images by, in IMAGE_TOKEN order."""
        return list(self.image_keys) if self.image_keys else self.image_names

    def describe(self) -> str:
        """How error details name this sample."""
        return Where(self.key, self.loc, self.record.get("id") is not None).label()


def iter_samples(path: str | os.PathLike[str], limits: IngestLimits = IngestLimits()) -> Iterator[ParsedSample]:
    """Parse and normalise records one by one; raise the first DatasetError in file order."""
    raw = ((index, Location(line=line), value, escaped) for index, line, value, escaped in _iter_raw(path, limits))
    yield from samples_of(raw, limits)


def samples_of(raw: Iterable[tuple[int, Location, Any, bool]], limits: IngestLimits) -> Iterator[ParsedSample]:
    """ParsedSamples of any reader's (1-based index, location, decoded value, check_chars) records."""
    for index, loc, value, escaped in raw:
        if index > limits.max_samples:
            raise too_many_samples(loc, limits)
        yield parse_record(value, index, loc, limits, check_chars=escaped)


def too_many_samples(loc: Location, limits: IngestLimits) -> DatasetError:
    return DatasetError("too_many_samples", f"{loc.label()}: the dataset has more than {limits.max_samples} samples",
                        **loc.fields())


def parse_record(
    value: Any, index: int, loc: Location | int, limits: IngestLimits = IngestLimits(), *, check_chars: bool = True,
    image_keys: Sequence[str] = (),
) -> ParsedSample:
    """Normalise one decoded record (the `index`-th, at `loc`: a Location or a 1-based line).

    check_chars=False skips the NUL / lone-surrogate walk, for records whose source text has no
    escape that could produce one. image_keys: see ParsedSample (readers of rows pass them)."""
    loc = loc if isinstance(loc, Location) else Location(line=loc)
    if not isinstance(value, dict):
        kind = "array" if isinstance(value, list) else type(value).__name__
        raise DatasetError("invalid_record", f"{loc.label()}: sample #{index} is a JSON {kind}; each sample must be "
                           "an object", **loc.fields())
    key, has_id = _sample_key(value, index, loc, limits)
    where = Where(key, loc, has_id)
    messages, images, placed = normalise_record(value, where, limits, check_chars=check_chars)
    if image_keys and len(image_keys) != len(images):
        raise where.error("invalid_image_ref", "has image parts in 'messages' and an image column; use one")
    return ParsedSample(key=key, record=value, messages=messages, image_names=images, index=index, line=loc.line or 0,
                        skill=record_skill(value, where), placed_image_tokens=placed, loc=loc,
                        image_keys=tuple(image_keys))


def content_hash(sample: ParsedSample, image_hashes: Sequence[str] = ()) -> str:
    """sha256 hex over a canonical JSON of the normalised messages and the images' sha256, in order.

    Formatting differences (LLaVA vs OpenAI spelling, key order, ids, image file names) do not
    change it; any change of text or image bytes does.
    """
    if len(image_hashes) != len(sample.image_names):
        raise ValueError(f"{sample.describe()}: {len(sample.image_names)} images but {len(image_hashes)} image hashes")
    canonical = {"v": 1, "messages": [[m.role, m.content] for m in sample.messages], "images": list(image_hashes)}
    text = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _sample_key(record: dict[str, Any], index: int, loc: Location, limits: IngestLimits) -> tuple[str, bool]:
    raw = record.get("id")
    if raw is None:
        return str(index), False
    bad = None
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        bad = f"must be a string or an integer, got {raw!r}"
    elif not str(raw).strip():
        bad = "must not be empty"
    elif len(str(raw)) > limits.max_sample_id_chars:
        bad = f"is {len(str(raw))} characters, over the limit of {limits.max_sample_id_chars}"
    elif "\x00" in str(raw):
        bad = "must not contain NUL characters"
    if bad:
        raise DatasetError(
            "invalid_sample_id", f"{loc.label()}: sample #{index}: 'id' {bad}", field="id", **loc.fields()
        )
    return str(raw), True

