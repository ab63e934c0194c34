"""Where a record sits in its source, for error details: a line (JSON, JSON Lines), a row group and
row (Parquet) or a shard file and row (a Hugging Face dataset directory).

Lines count from 1, as editors show them; rows and row groups from 0, as pyarrow, pandas and
`datasets` index them (`ds[17]`), so a user can look the record up with the tool that wrote it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Location:
    line: int | None = None
    row_group: int | None = None
    row: int | None = None
    shard: str | None = None

    def label(self) -> str:
        if self.line is not None:
            return f"line {self.line}"
        if self.row_group is not None:
            return f"row group {self.row_group}, row {self.row}"
        if self.shard is not None:
            return f"shard {self.shard!r}, row {self.row}"
        return f"row {self.row}"

    def fields(self) -> dict[str, Any]:
        """The IngestError keyword arguments that carry this location."""
        return {k: v for k in ("line", "row_group", "row", "shard") if (v := getattr(self, k)) is not None}
