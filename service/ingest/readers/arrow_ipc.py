"""Arrow IPC streams read without trusting their sizes: each message's body is checked before
pyarrow decodes it, and record batches become Python a slice at a time.

Why by hand: `pa.ipc.open_stream` decompresses ZSTD/LZ4 bodies (a small shard can declare
buffers of any size) and a dictionary-encoded column is small in the stream but large once each
row's value is materialized (measured: one 4,000-row batch of a 147 KB shard became 496 MB
before the first record). pyarrow does not expose a message's compression, so the flatbuffer
header is read here: four offsets, per the Arrow format's Message.fbs.
"""
from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

# Message.fbs: Message{version, header_type, header, bodyLength, custom_metadata};
# header types Schema=1, DictionaryBatch=2, RecordBatch=3; DictionaryBatch{id, data, isDelta};
# RecordBatch{length, nodes, buffers, compression, variadicBufferCounts}.
_DICTIONARY_BATCH, _RECORD_BATCH = 2, 3
SLICE_ROWS = 256  # rows converted to Python at a time


def _field(buf: bytes, table: int, index: int) -> int:
    """The offset of field `index` inside the flatbuffer table at `table` (0: absent)."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    size = struct.unpack_from("<H", buf, vtable)[0]
    return struct.unpack_from("<H", buf, vtable + 4 + 2 * index)[0] if 4 + 2 * index < size else 0


def _deref(buf: bytes, at: int) -> int:
    return at + struct.unpack_from("<I", buf, at)[0]


def body_compressed(metadata: bytes) -> bool:
    """Whether a message's header declares a compressed body (struct.error: a damaged header)."""
    root = _deref(metadata, 0)
    type_at, header_at = _field(metadata, root, 1), _field(metadata, root, 2)
    if not type_at or not header_at or metadata[root + type_at] not in (_DICTIONARY_BATCH, _RECORD_BATCH):
        return False
    header = _deref(metadata, root + header_at)
    if metadata[root + type_at] == _DICTIONARY_BATCH:
        data_at = _field(metadata, header, 1)
        if not data_at:
            return False
        header = _deref(metadata, header + data_at)
    return bool(_field(metadata, header, 3))


def scan_messages(path: str, max_body: int) -> Iterator[tuple[int, bool]]:
    """(body bytes, compressed) of each message of the stream at `path`, one message in memory."""
    import pyarrow as pa

    with pa.OSFile(path) as f:
        for message in pa.ipc.MessageReader.open_stream(f):
            body = message.body.size if message.body is not None else 0
            yield body, (body <= max_body and body_compressed(message.metadata.to_pybytes()))


def decoded_size(part: Any) -> int:  # noqa: ANN401 - a pyarrow RecordBatch
    """The bytes `part` takes once its dictionary columns are decoded, computed from the value
    lengths (the dictionary's, taken by index) without decoding anything."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = 0
    for column in part.columns:
        if not pa.types.is_dictionary(column.type):
            total += column.nbytes
            continue
        values = column.dictionary
        if _is_binary_like(values.type, pa):
            taken = pc.take(pc.binary_length(values), column.indices)
            total += int(pc.sum(taken).as_py() or 0) + 8 * len(column)  # + offsets
        else:  # fixed-width values (flat_dictionaries refused the rest)
            total += values.type.bit_width // 8 * len(column)
    return total


def decode(part: Any) -> Any:  # noqa: ANN401 - pyarrow RecordBatch in, out
    """`part` with its dictionary columns decoded (call after `decoded_size` was checked)."""
    import pyarrow as pa

    columns = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in part.columns]
    return pa.RecordBatch.from_arrays(columns, names=part.schema.names)


def nested_dictionary(t: Any) -> bool:  # noqa: ANN401 - a pyarrow DataType
    """Whether `t` holds a dictionary that `decoded_size` cannot size: one inside a list or
    struct, or one of non-flat values. save_to_disk writes no dictionaries at all."""
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        v = t.value_type
        return not (_is_binary_like(v, pa) or pa.types.is_integer(v) or pa.types.is_floating(v))
    return any(_contains_dictionary(t.field(i).type, pa) for i in range(t.num_fields))


def _contains_dictionary(t: Any, pa: Any) -> bool:  # noqa: ANN401
    return pa.types.is_dictionary(t) or any(_contains_dictionary(t.field(i).type, pa) for i in range(t.num_fields))


def _is_binary_like(t: Any, pa: Any) -> bool:  # noqa: ANN401
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t))
