"""Parquet: one row per record, the columns carrying the JSON record's fields.

An image column (`image`, or `images` for several) holds a path into the images archive or the
struct HF's Image feature writes, `{bytes, path}`, so the file can carry its own images. Rows
are read a small batch at a time (memory: one batch, its decoded size checked against
`max_row_group_bytes` before any of it becomes Python objects), and a record's location is its row group and its row inside it (both 0-based, as pyarrow
numbers them).
"""
from __future__ import annotations

from collections.abc import Iterator

from ..errors import DatasetError
from ..location import Location
from .base import RawRecord, RowReader
from .schema import check_schema

# Rows decoded at a time inside a row group. Small because the metadata's sizes are *encoded*
# sizes: a dictionary-encoded column of one repeated 100 KB string is 9.6 KB on disk for 4,000
# rows and 400 MB decoded (measured: reading the whole row group peaked at 924 MB). 64 such rows
# are 6.4 MB, and each batch's decoded size is checked against the limit before conversion.
_BATCH_ROWS = 64


class ParquetReader(RowReader):
    format = "parquet"

    def _open(self):  # noqa: ANN202 - a pyarrow.parquet.ParquetFile
        import pyarrow.parquet as pq  # imported here: the API loads pyarrow only for a Parquet upload

        try:
            return pq.ParquetFile(self.source)
        except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError ... for a damaged file
            raise DatasetError("corrupt_dataset", f"the Parquet file cannot be read: {e}") from None

    def check(self) -> int | None:
        size = self.source.stat().st_size
        if size > self.limits.max_dataset_bytes:
            raise DatasetError("dataset_too_large", f"the dataset file is {size} bytes, over the limit of "
                               f"{self.limits.max_dataset_bytes}")
        pf = self._open()
        check_schema(pf.schema_arrow)
        meta = pf.metadata
        if meta.num_rows > self.limits.max_samples:
            raise DatasetError("too_many_samples", f"the Parquet file has {meta.num_rows} rows, over the limit of "
                               f"{self.limits.max_samples} samples")
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            if group.total_byte_size > self.limits.max_row_group_bytes:
                raise DatasetError(
                    "row_group_too_large", f"row group {g} is {group.total_byte_size} bytes uncompressed, over the "
                    f"limit of {self.limits.max_row_group_bytes}; write the file with smaller row groups "
                    "(pyarrow: row_group_size=...)", row_group=g)
        if meta.num_rows == 0:
            raise DatasetError("empty_dataset", "the Parquet file has no rows")
        return meta.num_rows

    def records(self) -> Iterator[RawRecord]:
        self.check()
        pf = self._open()
        index = 0
        for g in range(pf.metadata.num_row_groups):
            row = 0
            # Fewer rows per batch when one row could decode big: a row holds at most all the group's
            # values (repetition levels can pack many into a few bytes), each one an offset, and a
            # value is stored whole in a page. Not a bound when one row repeats a dictionary value
            # many times (a 10 KB value 1,000 times in one list): the check after decoding, before
            # any conversion, catches that batch.
            group = pf.metadata.row_group(g)
            values = sum(group.column(c).num_values for c in range(group.num_columns))
            per_row = max(1, group.total_byte_size + 8 * values)
            rows = max(1, min(_BATCH_ROWS, self.limits.max_row_group_bytes // per_row))
            batches = pf.iter_batches(batch_size=rows, row_groups=[g])
            while True:
                try:
                    batch = next(batches, None)
                except Exception as e:  # noqa: BLE001
                    raise DatasetError("corrupt_dataset", f"row group {g}, row {row} of the Parquet file cannot be "
                                       f"read: {e}", row_group=g, row=row) from None
                if batch is None:
                    break
                if batch.nbytes > self.limits.max_row_group_bytes:
                    raise DatasetError(
                        "row_group_too_large", f"row group {g}, rows {row}-{row + batch.num_rows - 1} decode to "
                        f"{batch.nbytes} bytes, over the limit of {self.limits.max_row_group_bytes} (the file is "
                        "smaller: its values are dictionary-encoded or compressed)", row_group=g, row=row)
                for values in batch.to_pylist():
                    index += 1
                    yield self.row_record(values, index, Location(row_group=g, row=row))
                    row += 1
                del batch
