"""The frozen plan's blob: whole-plan round trips, one shard's slice read on its own (seekable or
forward-only streams), and corruption of a slice or the header refused."""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from core.blobs import LocalBlobStore
from workers.rounds.plan import CandidatePlan, shard_bounds
from workers.rounds.plan_blob import CandidateBlobCorrupt, freeze_plan, load_plan, load_shard_ids, plan_bytes


class _Stream(io.RawIOBase):
    """A blob's bytes as a stream that counts what is read; `seekable=False` is an S3 body."""

    def __init__(self, data: bytes, seekable: bool, counter: list[int]) -> None:
        self._buf, self._seekable, self._counter = io.BytesIO(data), seekable, counter

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def seek(self, offset: int, whence: int = 0) -> int:
        if not self._seekable:
            raise io.UnsupportedOperation("seek")
        return self._buf.seek(offset, whence)

    def readinto(self, b) -> int:  # noqa: ANN001
        n = self._buf.readinto(b)
        self._counter[0] += n
        return n


class RecordingStore(LocalBlobStore):
    """A local store whose `open` counts the bytes read, can refuse to seek, and can serve
    altered content for a blob (its stored file stays as it was)."""

    def __init__(self, root: Path, seekable: bool = True) -> None:
        super().__init__(root)
        self.seekable, self.read, self.altered = seekable, [0], {}

    def open(self, sha256: str):  # noqa: ANN201
        with super().open(sha256) as f:
            data = self.altered.get(sha256, f.read())
        return _Stream(data, self.seekable, self.read)


def a_plan(n_members: int = 7, n_new: int = 6) -> CandidatePlan:
    members = list(range(10, 10 + 3 * n_members, 3))
    new = list(range(1000, 1000 + 2 * n_new, 2))
    return CandidatePlan(sorted(members + new), members, new, duplicates=[[2001, 1000], [2002, 1002]],
                         previously_pruned=[5, 6])


@pytest.mark.parametrize("seekable", [True, False])
def test_every_shard_reads_exactly_its_slice(tmp_path: Path, seekable: bool) -> None:
    store = RecordingStore(tmp_path / "blobs", seekable)
    plan = a_plan()
    for size in (1, 4, 5, 13, 40):
        sha = freeze_plan(plan, store, size)
        for k, (a, b) in enumerate(shard_bounds(len(plan.candidates), size)):
            assert load_shard_ids(store, sha, k, size) == plan.candidates[a:b]
        with pytest.raises(IndexError, match="out of range"):
            load_shard_ids(store, sha, len(shard_bounds(len(plan.candidates), size)), size)


def test_a_shard_reads_a_small_part_of_a_large_plan(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "blobs", seekable=True)
    n = 100_000
    plan = CandidatePlan(list(range(n)), list(range(n // 2)), list(range(n // 2, n)))
    sha = freeze_plan(plan, store, 256)
    total = store.size(sha)
    store.read[0] = 0
    assert load_shard_ids(store, sha, 200, 256) == list(range(200 * 256, 201 * 256))
    # the fixed prefix and header, one 32-byte digest and 256 ids of 8 bytes: no more
    assert store.read[0] < 512 + 32 + 256 * 8 < total // 100


def test_whole_plan_round_trips_and_its_bytes_are_canonical(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    plan = a_plan()
    sha = freeze_plan(plan, store, 4)
    assert load_plan(store, sha) == plan
    assert freeze_plan(a_plan(), store, 4) == sha == hashlib.sha256(plan_bytes(plan, 4)).hexdigest()
    assert freeze_plan(plan, store, 5) != sha  # the slices' digests depend on the shard size
    empty = CandidatePlan([1], [], [1])
    assert load_plan(store, freeze_plan(empty, store, 256)) == empty


def test_a_corrupt_slice_is_refused_and_the_other_slices_still_read(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "blobs")
    plan = a_plan()
    sha = freeze_plan(plan, store, 4)
    data = bytearray(plan_bytes(plan, 4))
    data[-8 * (len(plan.previously_pruned) + 2 * len(plan.duplicates) + len(plan.new) + len(plan.members)) - 1] ^= 1
    store.altered[sha] = bytes(data)  # the last candidate's top byte flipped: shard 3 (ids 12..13)
    with pytest.raises(CandidateBlobCorrupt, match="shard 3's slice does not match"):
        load_shard_ids(store, sha, 3, 4)
    assert load_shard_ids(store, sha, 0, 4) == plan.candidates[:4]
    with pytest.raises(CandidateBlobCorrupt, match="does not hash to its name"):
        load_plan(store, sha)


def test_a_corrupt_header_or_another_shard_size_is_refused(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "blobs")
    plan = a_plan()
    sha = freeze_plan(plan, store, 4)
    with pytest.raises(CandidateBlobCorrupt, match="shard size 4, the round has 5"):
        load_shard_ids(store, sha, 0, 5)
    good = plan_bytes(plan, 4)
    # the header re-labelled (shard size 4 -> 2, same length): the slice it then points at fails its digest
    store.altered[sha] = good.replace(b'"shard_size":4', b'"shard_size":2')
    with pytest.raises(CandidateBlobCorrupt, match="slice does not match"):
        load_shard_ids(store, sha, 1, 2)
    store.altered[sha] = good[:30] + b"\xff" + good[31:]
    with pytest.raises(CandidateBlobCorrupt, match="unreadable header"):
        load_shard_ids(store, sha, 0, 4)
    # a flipped high bit in the header's length: refused, not a read of 2^60 bytes (MemoryError)
    store.altered[sha] = good[:8] + (int.from_bytes(good[8:16], "little") | 1 << 60).to_bytes(8, "little") + good[16:]
    with pytest.raises(CandidateBlobCorrupt, match="unreadable header"):
        load_shard_ids(store, sha, 0, 4)
    store.altered[sha] = good[: len(good) - 200]  # into the candidates
    with pytest.raises(CandidateBlobCorrupt, match="shorter"):
        load_shard_ids(store, sha, 3, 4)
    store.altered[sha] = b"not a plan at all"
    with pytest.raises(CandidateBlobCorrupt, match="not a candidate plan"):
        load_shard_ids(store, sha, 0, 4)
    with pytest.raises(CandidateBlobCorrupt, match="not found"):
        load_shard_ids(store, "0" * 64, 0, 4)


def test_plans_frozen_as_json_by_the_previous_release_still_read(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    plan = a_plan()
    # the previous release's format: canonical JSON of the dataclass
    sha = store.put_bytes(json.dumps(asdict(plan), sort_keys=True, separators=(",", ":")).encode()).sha256
    assert load_plan(store, sha) == plan
    for k, (a, b) in enumerate(shard_bounds(len(plan.candidates), 5)):
        assert load_shard_ids(store, sha, k, 5) == plan.candidates[a:b]
