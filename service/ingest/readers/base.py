"""The one interface every dataset reader implements, and what rows-based readers share.

A reader turns one source (a JSON file, a Parquet file, a Hugging Face dataset directory) into
records, each with a precise Location. `check()` is the cheap part the API runs on an upload
(sniffing, a footer, a schema: no row is decoded); `samples()` is the full read the ingest
worker runs. Images a row carries itself (`{bytes, path}`, as HF's Image feature stores them)
are written once to the reader's spool folder and handed to validation by key.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import DatasetError
from ..limits import IngestLimits
from ..location import Location

if TYPE_CHECKING:
    from ..formats import ParsedSample

#: Image keys of embedded images start with a NUL: no record's image reference can (validation
#: refuses NUL characters), so an embedded image never collides with an archive member.
EMBEDDED = "\x00embedded:"
IMAGE_COLUMNS = ("image", "images")


@dataclass(frozen=True)
class EmbeddedImage:
    """An image a row carried in its own bytes, spooled to a file for decoding and storing."""

    key: str
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class RawRecord:
    index: int  # 1-based position in the dataset
    loc: Location
    value: Any
    check_chars: bool = True
    image_keys: tuple[str, ...] = ()


class RecordReader(ABC):
    """A dataset source read record by record; memory holds one record (or one row group)."""

    format: ClassVar[str]

    def __init__(self, source: str | os.PathLike[str], limits: IngestLimits = IngestLimits(),
                 spool: str | os.PathLike[str] | None = None) -> None:
        self.source = Path(source)
        self.limits = limits
        self.spool = Path(spool) if spool is not None else None
        self.embedded: dict[str, EmbeddedImage] = {}

    def check(self) -> int | None:
        """Cheap checks (no record decoded); the number of records when the source says it."""
        return None

    @abstractmethod
    def records(self) -> Iterator[RawRecord]:
        """Every record in source order; raises the first unreadable one as a DatasetError."""

    def samples(self) -> Iterator[ParsedSample]:
        """Every record parsed and normalised; raises the first bad one."""
        from ..formats import parse_record, too_many_samples  # formats reads JSON with this package's reader

        for raw in self.records():
            if raw.index > self.limits.max_samples:
                raise too_many_samples(raw.loc, self.limits)
            yield parse_record(raw.value, raw.index, raw.loc, self.limits, check_chars=raw.check_chars,
                               image_keys=raw.image_keys)


class RowReader(RecordReader):
    """What Parquet and Arrow readers share: a row (a dict of columns) becomes a JSON record."""

    def row_record(self, row: dict[str, Any], index: int, loc: Location) -> RawRecord:
        """The row as a record: JSON values only, its image column as image names (+ keys)."""
        record = {name: _jsonable(value, name, loc) for name, value in row.items() if name not in IMAGE_COLUMNS}
        keys: list[str] = []
        for column in IMAGE_COLUMNS:
            value = row.get(column)
            if value is None:
                continue
            if isinstance(value, list):
                names = [self._image(v, f"{column}[{i}]", loc, keys) for i, v in enumerate(value)]
                record[column] = names
            else:
                record[column] = self._image(value, column, loc, keys)
        text = json.dumps(record, ensure_ascii=False)  # the record as a JSON reader would have read it
        limit = self.limits.max_record_bytes
        if len(text) > limit or (4 * len(text) > limit and len(text.encode("utf-8")) > limit):
            raise DatasetError("record_too_large", f"{loc.label()}: sample #{index} is over the limit of "
                               f"{self.limits.max_record_bytes} bytes for one sample", **loc.fields())
        return RawRecord(index, loc, record, True, tuple(keys))

    def _image(self, value: Any, field: str, loc: Location, keys: list[str]) -> Any:
        """An image cell's name in the record; its key appended to `keys`."""
        if isinstance(value, dict) and set(value) <= {"bytes", "path"}:
            data, path = value.get("bytes"), value.get("path")
            if data is None and path is None:
                return None  # HF's null image
            if data is None:  # HF's Image feature with a path only: the file is in the images archive
                keys.append(path if isinstance(path, str) else "")
                return path
            image = self._spool(data, field, loc)
            keys.append(image.key)
            # The name the record keeps (and a selection's tar uses): the writer's file name, else the hash.
            return path if isinstance(path, str) and path.strip() and "\x00" not in path else image.sha256
        keys.append(value if isinstance(value, str) else "")
        return value  # a path into the images archive; validation checks it like a JSON record's

    def _spool(self, data: bytes, field: str, loc: Location) -> EmbeddedImage:
        if len(data) > self.limits.max_member_bytes:
            raise DatasetError("record_too_large", f"{loc.label()}, field {field!r}: the embedded image is "
                               f"{len(data)} bytes, over the limit of {self.limits.max_member_bytes}",
                               field=field, **loc.fields())
        sha = hashlib.sha256(data).hexdigest()
        key = EMBEDDED + sha
        if key not in self.embedded:
            if self.spool is None:
                raise RuntimeError("a reader of embedded images needs a spool folder")
            self.spool.mkdir(parents=True, exist_ok=True)
            path = self.spool / sha
            path.write_bytes(data)
            self.embedded[key] = EmbeddedImage(key, path, sha, len(data))
        return self.embedded[key]


def _jsonable(value: Any, field: str, loc: Location) -> Any:
    """A cell as JSON: lists, objects, strings, finite numbers, booleans, null."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DatasetError("invalid_record", f"{loc.label()}, field {field!r}: {value} is not a JSON number",
                               field=field, **loc.fields())
        return value
    if isinstance(value, list):
        return [_jsonable(v, f"{field}[{i}]", loc) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _jsonable(v, f"{field}.{k}", loc) for k, v in value.items()}
    raise DatasetError("unsupported_column", f"{loc.label()}, field {field!r}: a {type(value).__name__} value has no "
                       "JSON form; columns must hold strings, numbers, booleans, lists or structs",
                       field=field, **loc.fields())
