"""The select stage's feature file: written front to back, read by row without a memory map."""
import numpy as np
import pytest

from workers.engine.feature_file import FeatureFileWriter, FileRows


def _mapped_rss(path) -> int:
    """Resident bytes of this process's mappings of `path` (from /proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 5:  # a mapping's header line
                inside = len(head) >= 6 and head[-1] == str(path)
            elif inside and head[0] == "Rss:":
                total += int(head[1]) * 1024
    return total


def test_file_rows_read_any_rows_without_mapping_the_file(tmp_path):
    x = np.random.default_rng(2).normal(size=(4096, 1024)).astype(np.float16)  # 8 MiB
    path = tmp_path / "x.npy"
    np.save(path, x)
    plain = np.load(path, mmap_mode="r")
    assert np.array_equal(np.asarray(plain).copy(), x)
    assert _mapped_rss(path) >= 7 << 20  # a memmap keeps what it read resident: the check can fail
    del plain
    rows = FileRows(path)
    assert (rows.shape, rows.dtype, rows.ndim, len(rows)) == (x.shape, np.float16, 2, 4096)
    assert np.array_equal(np.concatenate([rows[s : s + 300] for s in range(0, 4096, 300)]), x)
    for idx in (np.array([4095, 0, 7, 8, 9, 7, -1]), np.arange(0, 4096, 64), np.zeros(0, dtype=np.int64)):
        assert np.array_equal(rows[idx], x[idx])
    assert np.array_equal(rows[5], x[5]) and np.array_equal(rows[-2], x[-2]) and rows[10:10].shape == (0, 1024)
    mask = np.zeros(4096, dtype=bool)
    mask[[3, 4, 900]] = True
    assert np.array_equal(rows[mask], x[mask])
    assert _mapped_rss(path) == 0
    for bad in (4096, np.array([1, 4096]), np.array([1.0, 2.0]), mask[:10], slice(0, 10, 2)):
        with pytest.raises(IndexError):
            rows[bad]
    rows.close()


def test_file_rows_refuse_a_file_shorter_than_its_header_says(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((10, 4), dtype=np.float16))
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 8)  # the last row lost
    with pytest.raises(ValueError, match="bytes, but a"):
        FileRows(path)


def test_the_writer_writes_what_file_rows_and_numpy_read(tmp_path):
    x = np.random.default_rng(3).normal(size=(50, 7)).astype(np.float32)
    out = FeatureFileWriter(tmp_path / "f.npy", (50, 7))
    for start in range(0, 50, 16):
        out.write(x[start : start + 16])  # float32 in, float16 stored
    out.close()
    assert np.array_equal(np.load(tmp_path / "f.npy"), x.astype(np.float16))
    with FileRows(tmp_path / "f.npy") as rows:
        assert rows.dtype == np.float16 and np.array_equal(rows[:], x.astype(np.float16))
