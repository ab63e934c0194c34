"""The frozen candidate plan as one blob that a feature-shard job reads a slice of.

A shard job needs only its own `shard_size` candidate ids. With the plan stored as JSON, every
job read, hashed and parsed the whole of it: 0.23 s per job at 1M candidates, about 15
CPU-minutes per round at the default shard size (bench/plan_slices.py). So the ids are stored as
fixed-width little-endian int64 and the header carries one sha256 per shard slice:

    MAGIC (8 bytes) | header length n (uint64 LE) | header (n bytes of JSON)
    | slice digests (32 bytes per shard) | candidates | members | new | duplicates (pairs) | previously_pruned

A shard job reads the header, its slice's digest and its slice: reads in ascending offsets, so a
store whose streams cannot seek (an S3 body) costs a forward read and nothing else. The slice
must hash to its digest, so a corrupt slice, or a corrupt header that moves or re-labels it, is
refused. Stages that need the whole plan (warm-up, select, finalize) read it all and check the
blob's sha256 against its name, as before.

The bytes are canonical (a retried prepare freezes the same blob). Plans frozen as JSON by an
earlier release (rounds in flight across an upgrade) are still read.
"""
from __future__ import annotations

import hashlib
import json
import struct
from typing import BinaryIO

import numpy as np

from core.blobs import BlobNotFound, BlobStore
from workers.rounds.plan import CandidatePlan, shard_bounds

MAGIC = b"ADPLAN\x00\x01"
FORMAT = 1
_LEN = struct.Struct("<Q")
# The header is a few hundred bytes of JSON; a larger length is a damaged blob, not a read to try.
_MAX_HEADER = 1 << 20
_DIGEST = 32
_ID = np.dtype("<i8")
_SECTIONS = ("candidates", "members", "new", "duplicates", "previously_pruned")
_SKIP_CHUNK = 1024 * 1024


class CandidateBlobCorrupt(Exception):
    """The frozen candidate list is missing or no longer matches its sha256."""

    code = "blob_corrupt"


def _ids_bytes(values: list[int] | list[list[int]]) -> bytes:
    return np.asarray(values, dtype=_ID).reshape(-1).tobytes()


def plan_bytes(plan: CandidatePlan, shard_size: int) -> bytes:
    """The blob's content: canonical for a given plan and shard size."""
    sections = {name: _ids_bytes(getattr(plan, name)) for name in _SECTIONS}
    cand = sections["candidates"]
    digests = b"".join(hashlib.sha256(cand[8 * a: 8 * b]).digest()
                       for a, b in shard_bounds(len(plan.candidates), shard_size))
    header = json.dumps({
        "format": FORMAT, "shard_size": shard_size,
        "counts": {name: len(getattr(plan, name)) for name in _SECTIONS},
    }, sort_keys=True, separators=(",", ":")).encode()
    return b"".join([MAGIC, _LEN.pack(len(header)), header, digests, *sections.values()])


def freeze_plan(plan: CandidatePlan, blobs: BlobStore, shard_size: int) -> str:
    """Store the plan as a blob (atomic, content-addressed); returns its sha256."""
    return blobs.put_bytes(plan_bytes(plan, shard_size)).sha256


def _corrupt(sha256: str, why: str) -> CandidateBlobCorrupt:
    return CandidateBlobCorrupt(f"candidate list blob {sha256} is missing or corrupt ({why})")


def _read_exact(f: BinaryIO, n: int, sha256: str) -> bytes:
    parts, left = [], n
    while left:
        chunk = f.read(left)
        if not chunk:
            raise _corrupt(sha256, "shorter than its header says")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _skip_to(f: BinaryIO, pos: int, offset: int, sha256: str) -> None:
    """Move from `pos` forward to `offset`: a seek where the stream can, else reads."""
    if f.seekable():
        f.seek(offset)
        return
    while pos < offset:
        pos += len(_read_exact(f, min(_SKIP_CHUNK, offset - pos), sha256))


def _parse_header(data: bytes, sha256: str) -> dict:
    try:
        header = json.loads(data)
        counts = {name: int(header["counts"][name]) for name in _SECTIONS}
        shard_size = int(header["shard_size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise _corrupt(sha256, f"unreadable header: {exc}") from None
    if header.get("format") != FORMAT or shard_size < 1 or min(counts.values()) < 0:
        raise _corrupt(sha256, "unknown header")
    return {"shard_size": shard_size, "counts": counts}


def _open(blobs: BlobStore, sha256: str) -> BinaryIO:
    try:
        return blobs.open(sha256)
    except BlobNotFound:
        raise _corrupt(sha256, "not found") from None


def load_plan(blobs: BlobStore, sha256: str) -> CandidatePlan:
    """Read a whole frozen plan back, checking its sha256."""
    with _open(blobs, sha256) as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise _corrupt(sha256, "content does not hash to its name")
    if data[:1] == b"{":  # frozen as JSON by an earlier release
        return CandidatePlan(**json.loads(data))
    if data[:len(MAGIC)] != MAGIC:
        raise _corrupt(sha256, "not a candidate plan")
    (n,) = _LEN.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    header = _parse_header(data[start: start + n], sha256)
    counts = header["counts"]
    offset = start + n + _DIGEST * _shards(counts["candidates"], header["shard_size"])
    values = {}
    for name in _SECTIONS:
        width = 2 if name == "duplicates" else 1
        arr = np.frombuffer(data, dtype=_ID, count=counts[name] * width, offset=offset)
        values[name] = arr.reshape(-1, 2).tolist() if width == 2 else arr.tolist()
        offset += arr.nbytes
    return CandidatePlan(**values)


def load_shard_ids(blobs: BlobStore, sha256: str, shard: int, shard_size: int) -> list[int]:
    """The candidate ids of shard `shard`, read from the plan blob without reading the rest.

    `shard_size` is the round's; a plan frozen with another one is refused (its shards would not
    be the rows the round planned).
    """
    with _open(blobs, sha256) as f:
        head = _read_exact(f, len(MAGIC) + _LEN.size, sha256)
        legacy = head[:1] == b"{"
        if not legacy:
            ids = _read_slice(f, head, sha256, shard, shard_size)
    if legacy:  # frozen as JSON by an earlier release: the whole plan it is
        candidates = load_plan(blobs, sha256).candidates
        a, b = _bounds(len(candidates), shard_size, shard)
        return candidates[a:b]
    return ids


def _shards(n: int, shard_size: int) -> int:
    return -(-n // shard_size)


def _bounds(n: int, shard_size: int, shard: int) -> tuple[int, int]:
    """`shard_bounds(n, shard_size)[shard]`, without building the list."""
    if not 0 <= shard < _shards(n, shard_size):
        raise IndexError(f"shard {shard} out of range: the plan has {_shards(n, shard_size)} shards")
    return shard * shard_size, min(n, (shard + 1) * shard_size)


def _read_slice(f: BinaryIO, head: bytes, sha256: str, shard: int, shard_size: int) -> list[int]:
    """The rest of `load_shard_ids` once the first bytes (`head`) are read."""
    if head[:len(MAGIC)] != MAGIC:
        raise _corrupt(sha256, "not a candidate plan")
    (n,) = _LEN.unpack_from(head, len(MAGIC))
    if n > _MAX_HEADER:
        raise _corrupt(sha256, f"unreadable header (a length of {n} bytes)")
    header = _parse_header(_read_exact(f, n, sha256), sha256)
    if header["shard_size"] != shard_size:
        raise _corrupt(sha256, f"frozen with shard size {header['shard_size']}, the round has {shard_size}")
    shards = _shards(header["counts"]["candidates"], shard_size)
    a, b = _bounds(header["counts"]["candidates"], shard_size, shard)
    digests_at = len(head) + n
    _skip_to(f, digests_at, digests_at + _DIGEST * shard, sha256)
    digest = _read_exact(f, _DIGEST, sha256)
    ids_at = digests_at + _DIGEST * shards + 8 * a
    _skip_to(f, digests_at + _DIGEST * (shard + 1), ids_at, sha256)
    data = _read_exact(f, 8 * (b - a), sha256)
    if hashlib.sha256(data).digest() != digest:
        raise _corrupt(sha256, f"shard {shard}'s slice does not match its digest")
    return np.frombuffer(data, dtype=_ID).tolist()
