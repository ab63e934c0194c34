"""JSON (one array of records) and JSON Lines: today's formats, read by the streaming parser in
formats.py; a record's location is the line where it starts."""
from __future__ import annotations

from collections.abc import Iterator

from ..errors import DatasetError
from ..formats import _iter_raw, detect_format
from ..location import Location
from .base import RawRecord, RecordReader


class JsonReader(RecordReader):
    """A JSON array or JSON Lines file (sniffed from its first byte)."""

    format = "json"

    def check(self) -> int | None:
        size = self.source.stat().st_size
        if size > self.limits.max_dataset_bytes:
            raise DatasetError("dataset_too_large", f"the dataset file is {size} bytes, over the limit of "
                               f"{self.limits.max_dataset_bytes}")
        detect_format(self.source)
        return None

    def records(self) -> Iterator[RawRecord]:
        for index, line, value, escaped in _iter_raw(self.source, self.limits):
            yield RawRecord(index, Location(line=line), value, escaped)
