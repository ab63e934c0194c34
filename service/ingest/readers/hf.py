"""A Hugging Face `datasets` directory written by `save_to_disk`: state.json names the Arrow
files (IPC streams, "shards"), dataset_info.json describes the features, and an Image feature
is stored as the struct {bytes, path}.

Read with pyarrow directly, not `datasets.load_from_disk`: the layout is small and stable
(state.json's `_data_files`, Arrow IPC streams), pyarrow already reads Parquet here, and
`datasets` would bring fsspec, huggingface_hub, pandas and more into every ingest worker for
what `pa.ipc.open_stream` does batch by batch. Memory: one record batch, whose body is checked
against `max_row_group_bytes` before it is decoded (`save_to_disk` writes batches of 1,000 rows,
100 for image datasets, and never compresses them: compressed bodies are refused), converted to
Python 256 rows at a time. A record's location is its shard and its 0-based row in that shard.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ..errors import DatasetError
from ..location import Location
from .arrow_ipc import SLICE_ROWS, decode, decoded_size, nested_dictionary, scan_messages
from .base import RawRecord, RowReader
from .schema import check_schema

STATE_FILE = "state.json"
DICT_FILE = "dataset_dict.json"


class HFDatasetReader(RowReader):
    """`source` is the directory holding state.json."""

    format = "hf"

    def shards(self) -> list[Path]:
        """The Arrow files state.json names, checked to be plain files of this directory."""
        root = self.source
        for name in (DICT_FILE, STATE_FILE):
            if (root / name).is_symlink():
                raise DatasetError("corrupt_dataset", f"{name} is a link; links are not followed")
        if (root / DICT_FILE).is_file() and not (root / STATE_FILE).is_file():
            raise DatasetError("corrupt_dataset", f"this is a DatasetDict ({_splits(_read_json(root / DICT_FILE))}); "
                               "send one split's folder (the one holding state.json)")
        state = _read_json(root / STATE_FILE)
        files = state.get("_data_files")
        if not isinstance(files, list) or not files:
            raise DatasetError("corrupt_dataset", "state.json lists no data files ('_data_files')")
        shards = []
        for entry in files:
            name = entry.get("filename") if isinstance(entry, dict) else None
            if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
                raise DatasetError("corrupt_dataset", f"state.json names data file {name!r}, which is not a file "
                                   "name in the dataset's folder")
            path = root / name
            if path.is_symlink():  # a link could lead a by-reference read outside the allowed prefix
                raise DatasetError("corrupt_dataset", f"data file {name!r} is a link; links are not followed")
            if not path.is_file():
                raise DatasetError("corrupt_dataset", f"data file {name!r} named by state.json is missing")
            shards.append(path)
        return shards

    def check(self) -> int | None:
        import pyarrow as pa  # imported here: the API loads pyarrow only for an Arrow upload

        shards = self.shards()
        total = sum(p.stat().st_size for p in shards)
        if total > self.limits.max_dataset_bytes:
            raise DatasetError("dataset_too_large", f"the dataset's Arrow files hold {total} bytes, over the limit "
                               f"of {self.limits.max_dataset_bytes}")
        for path in shards:
            try:
                with pa.OSFile(str(path)) as f:
                    schema = pa.ipc.open_stream(f).schema
            except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError ...
                raise DatasetError("corrupt_dataset", f"shard {path.name!r} is not an Arrow stream: {e}",
                                   shard=path.name) from None
            check_schema(schema)
            for field in schema:
                if nested_dictionary(field.type):
                    raise DatasetError("unsupported_column", f"column {field.name!r} of shard {path.name!r} has type "
                                       f"{field.type}: dictionary-encoded values may only be flat strings, bytes or "
                                       "numbers", field=field.name, shard=path.name)
            self._check_bodies(path)
        return None

    def _check_bodies(self, path: Path) -> None:
        """Each message's body within the row-group limit, and none compressed."""
        limit = self.limits.max_row_group_bytes
        try:
            for body, compressed in scan_messages(str(path), limit):
                if body > limit:
                    raise DatasetError("row_group_too_large", f"shard {path.name!r} holds a record batch of {body} "
                                       f"bytes, over the limit of {limit}; save it with smaller shards or batches",
                                       shard=path.name)
                if compressed:
                    raise DatasetError("compressed_stream", f"shard {path.name!r} is a compressed Arrow stream "
                                       "(LZ4/ZSTD); save_to_disk writes uncompressed ones: save the dataset with it",
                                       shard=path.name)
        except DatasetError:
            raise
        except Exception as e:  # noqa: BLE001 - ArrowInvalid, OSError, struct.error for a damaged header
            raise DatasetError("corrupt_dataset", f"shard {path.name!r} is not an Arrow stream: {e}",
                               shard=path.name) from None

    def records(self) -> Iterator[RawRecord]:
        import pyarrow as pa

        self.check()
        index = 0
        for path in self.shards():
            row = 0
            try:
                with pa.OSFile(str(path)) as f:
                    for batch in pa.ipc.open_stream(f):
                        for start in range(0, batch.num_rows, SLICE_ROWS):
                            part = batch.slice(start, SLICE_ROWS)
                            if (size := decoded_size(part)) > self.limits.max_row_group_bytes:
                                raise DatasetError(
                                    "row_group_too_large", f"shard {path.name!r}, rows {row}-"
                                    f"{row + part.num_rows - 1} decode to {size} bytes, over the limit of "
                                    f"{self.limits.max_row_group_bytes}", shard=path.name, row=row)
                            for values in decode(part).to_pylist():
                                index += 1
                                yield self.row_record(values, index, Location(shard=path.name, row=row))
                                row += 1
            except pa.ArrowInvalid as e:
                raise DatasetError("corrupt_dataset", f"shard {path.name!r}, row {row}: the Arrow stream cannot "
                                   f"be read: {e}", shard=path.name, row=row) from None


def _splits(info: dict) -> str:
    """A DatasetDict's split names for an error: counted, at most 5 shown, each short and quoted
    (the file is the sender's: its content is not echoed beyond that)."""
    splits = info.get("splits")
    if not isinstance(splits, list):
        return "its splits are not listed"
    shown = ", ".join(repr(str(s)[:40]) for s in splits[:5]) + (", ..." if len(splits) > 5 else "")
    return f"{len(splits)} split(s): {shown}"


def _read_json(path: Path) -> dict:
    """The JSON object in `path`. Other OSErrors than a missing file pass: a by-reference check
    turns them into source_unreadable, and a stored upload's are the server's."""
    try:
        value = json.loads(path.read_bytes()[:1_000_000])
    except FileNotFoundError:
        raise DatasetError("corrupt_dataset", f"the dataset folder has no {path.name}: save it with "
                           "datasets' save_to_disk") from None
    except ValueError as e:
        raise DatasetError("corrupt_dataset", f"{path.name} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise DatasetError("corrupt_dataset", f"{path.name} must hold a JSON object")
    return value
