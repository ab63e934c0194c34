"""One float16 feature file (a .npy): written front to back, read by row with pread.

The select stage copies a round's feature shards into one such file and every consumer reads
rows from it through `FileRows`, so the process never maps the file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class FeatureFileWriter:
    """A float16 .npy of a known shape, written front to back with plain writes (not through a
    writable memmap, whose dirty pages would count in the writer's resident set)."""

    def __init__(self, path: Path, shape: tuple[int, int]) -> None:
        self.width = shape[1]
        self._file = open(path, "wb")
        np.lib.format.write_array_header_1_0(self._file, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
                                                          "fortran_order": False, "shape": shape})

    def write(self, rows: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(rows, dtype=np.float16).tobytes())

    def close(self) -> None:
        self._file.close()


class FileRows:
    """Read-only rows of a .npy file, read with pread into fresh arrays: none of the file stays
    mapped into the process. Indexing takes an int, a step-1 slice, an int array or a boolean
    mask and returns a copy; runs of consecutive rows are read with one call.

    A memmap keeps every page it touches mapped, and the kernel maps around each fault: in the
    select stage of a 200k × 8,192 float16 round, clustering left the whole 3.1 GB file resident,
    and gathering 2,560 scattered rows (42 MB of them) alone mapped 2.4 GB.
    """

    def __init__(self, path) -> None:
        self.path = path
        self._file = open(path, "rb")
        try:
            major, _ = np.lib.format.read_magic(self._file)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(self._file)
            if fortran or len(shape) != 2:
                raise ValueError(f"{path}: expected a C-ordered 2-D array, got shape {shape} (fortran={fortran})")
            self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), 2
            self._offset = self._file.tell()
            self._row_bytes = self.shape[1] * self.dtype.itemsize
            size = os.fstat(self._file.fileno()).st_size
            if size != self._offset + self.shape[0] * self._row_bytes:
                raise ValueError(f"{path}: {size} bytes, but a {self.shape} {self.dtype} array takes "
                                 f"{self._offset + self.shape[0] * self._row_bytes}")
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> FileRows:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.shape[0]

    def close(self) -> None:
        self._file.close()

    def _read(self, start: int, out: np.ndarray) -> None:
        view, pos = memoryview(out).cast("B"), self._offset + start * self._row_bytes
        while len(view):
            got = os.preadv(self._file.fileno(), [view], pos)
            if got <= 0:
                raise ValueError(f"{self.path}: the file ended inside rows {start}..{start + len(out) - 1}")
            view, pos = view[got:], pos + got

    def __getitem__(self, key) -> np.ndarray:
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            k = int(key) + (n if key < 0 else 0)
            if not 0 <= k < n:
                raise IndexError(f"row {key} out of range for {n} rows")
            return self[k : k + 1][0]
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                raise IndexError("FileRows slices take no step")
            out = np.empty((max(0, stop - start), self.shape[1]), dtype=self.dtype)
            if len(out):
                self._read(start, out)
            return out
        rows = np.asarray(key)
        if rows.dtype == bool:
            if rows.shape != (n,):
                raise IndexError(f"a boolean mask over {n} rows must have shape ({n},), got {rows.shape}")
            rows = np.flatnonzero(rows)
        elif rows.size == 0:
            rows = rows.astype(np.int64)
        elif not np.issubdtype(rows.dtype, np.integer):
            raise IndexError(f"FileRows takes integer or boolean indices, got {rows.dtype}")
        rows = rows.astype(np.int64, copy=False)
        if rows.ndim != 1:
            raise IndexError(f"FileRows takes a 1-D index array, got shape {rows.shape}")
        rows = np.where(rows < 0, rows + n, rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        uniq, back = np.unique(rows, return_inverse=True)
        got = np.empty((len(uniq), self.shape[1]), dtype=self.dtype)
        breaks = np.flatnonzero(np.diff(uniq) != 1) + 1
        for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(uniq)]) if len(uniq) else ():
            self._read(int(uniq[a]), got[a:b])
        if len(uniq) == len(rows) and (len(rows) < 2 or bool(np.all(rows[1:] > rows[:-1]))):
            return got  # already in the order asked: no second copy
        return got[back.ravel()]
