"""Images archives: kind sniffing, safe listing and bounded extraction, reference matching."""
from __future__ import annotations

import gzip
import hashlib
import tarfile
import warnings
import zipfile

import pytest

from service.ingest.archives import detect_archive, iter_extract, list_archive
from service.ingest.errors import IngestError
from service.ingest.limits import IngestLimits
from service.ingest.names import MemberIndex, normalise_member_name
from tests.datagen import (
    write_lying_zip,
    write_many_members_zip,
    write_tar,
    write_tar_special,
    write_zip,
    write_zip_bomb,
    write_zip_symlink,
)

MEMBERS = {"./images/a.jpg": b"aaa", "images/sub/b.png": b"bbbb", "c.gif": b"c"}


def _extract(path, dest_dir, limits: IngestLimits = IngestLimits(), only=None) -> dict:  # noqa: ANN001
    """Member name -> extracted file, every member extracted."""
    return {m.name: m.path for m in iter_extract(path, dest_dir, limits, only)}


def _err(fn, *args, **kw) -> IngestError:
    with pytest.raises(IngestError) as info:
        fn(*args, **kw)
    return info.value


@pytest.mark.parametrize("kind", ["zip", "tar", "tar.gz"])
def test_list_and_extract_each_kind(tmp_path, kind):
    # A misleading extension on purpose: the kind comes from the bytes.
    if kind == "zip":
        path = write_zip(tmp_path, MEMBERS, name="upload.tar")
    else:
        path = write_tar(tmp_path, MEMBERS, name="upload.zip", gz=kind == "tar.gz")
    assert detect_archive(path) == kind
    listed = {m.name: m.size for m in list_archive(path)}
    assert listed == {"images/a.jpg": 3, "images/sub/b.png": 4, "c.gif": 1}
    out = tmp_path / "out"
    extracted = list(iter_extract(path, out))
    assert [m.name for m in extracted] == ["images/a.jpg", "images/sub/b.png", "c.gif"]
    for m in extracted:
        data = MEMBERS.get(m.name) or MEMBERS["./" + m.name]
        assert m.path == out / m.name and m.path.read_bytes() == data
        assert m.sha256 == hashlib.sha256(data).hexdigest() and m.size == len(data)


def test_extract_only_selected_and_directories_ignored(tmp_path):
    path = tmp_path / "d.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("images/", b"")
        zf.writestr("images/a.jpg", b"a")
        zf.writestr("images/b.jpg", b"b")
    assert [m.name for m in list_archive(path)] == ["images/a.jpg", "images/b.jpg"]
    got = _extract(path, tmp_path / "x", only={"images/b.jpg"})
    assert list(got) == ["images/b.jpg"] and not (tmp_path / "x/images/a.jpg").exists()


@pytest.mark.parametrize("bad", ["../evil.jpg", "images/../../evil.jpg", "..\\evil.jpg"])
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_traversal_member_rejected_and_nothing_written(tmp_path, bad, kind):
    members = {"images/ok.jpg": b"ok", bad: b"evil"}
    path = write_zip(tmp_path, members) if kind == "zip" else write_tar(tmp_path, members)
    err = _err(_extract, path, tmp_path / "out" / "x")
    assert (err.code, err.status, err.member) == ("unsafe_archive_member", 422, bad)
    assert "'..'" in err.detail
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.jpg").exists()


@pytest.mark.parametrize("bad", ["/etc/evil.jpg", "C:/evil.jpg"])
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_absolute_member_rejected(tmp_path, bad, kind):
    path = write_zip(tmp_path, {bad: b"x"}) if kind == "zip" else write_tar(tmp_path, {bad: b"x"})
    err = _err(list_archive, path)
    assert err.code == "unsafe_archive_member" and "absolute" in err.detail


def test_zip_symlink_rejected(tmp_path):
    path = write_zip_symlink(tmp_path, members={"images/ok.jpg": b"x"})
    err = _err(list_archive, path)
    assert (err.code, err.member) == ("unsafe_archive_member", "images/link.jpg")
    assert "symbolic link" in err.detail


@pytest.mark.parametrize(
    ("kind", "words"),
    [(tarfile.SYMTYPE, "symbolic link"), (tarfile.LNKTYPE, "hard link"), (tarfile.CHRTYPE, "not a regular file"),
     (tarfile.FIFOTYPE, "not a regular file")],
)
@pytest.mark.parametrize("gz", [False, True])
def test_tar_links_and_devices_rejected(tmp_path, kind, words, gz):
    path = write_tar_special(tmp_path, kind=kind, target="images/ok.jpg", members={"images/ok.jpg": b"x"}, gz=gz)
    err = _err(iter_extract(path, tmp_path / "out").__next__)
    assert err.code == "unsafe_archive_member" and words in err.detail
    assert not (tmp_path / "out" / "images").exists()  # rejected before anything is written


def test_member_count_over_limit(tmp_path):
    limits = IngestLimits(max_members=10)
    assert len(list_archive(write_many_members_zip(tmp_path, 10), limits)) == 10
    err = _err(list_archive, write_many_members_zip(tmp_path, 11), limits)
    assert (err.code, err.status) == ("too_many_members", 413)
    tar = write_tar(tmp_path, {f"{i}.jpg": b"" for i in range(11)})
    assert _err(list_archive, tar, limits).code == "too_many_members"


def test_zip_bomb_over_uncompressed_limit(tmp_path):
    path = write_zip_bomb(tmp_path, size=4 * 1024 * 1024)
    assert path.stat().st_size < 20_000  # it really is a bomb: ~1000x expansion
    err = _err(list_archive, path, IngestLimits(max_uncompressed_bytes=1024 * 1024))
    assert (err.code, err.status) == ("archive_too_large", 413)
    err = _err(list_archive, path, IngestLimits(max_member_bytes=1024 * 1024))
    assert (err.code, err.status, err.member) == ("member_too_large", 413, "images/bomb.png")


def test_total_over_limit_across_members(tmp_path):
    path = write_tar(tmp_path, {f"{i}.jpg": bytes(400) for i in range(3)}, gz=True)
    assert len(list_archive(path, IngestLimits(max_uncompressed_bytes=1200))) == 3
    err = _err(list_archive, path, IngestLimits(max_uncompressed_bytes=1199))
    assert err.code == "archive_too_large" and err.member == "2.jpg"


def test_lying_zip_header_cannot_write_past_declared_size(tmp_path):
    path = write_lying_zip(tmp_path, bytes(1024 * 1024), declared_size=1000)
    assert [m.size for m in list_archive(path)] == [1000]  # the lie passes the declared-size check ...
    out = tmp_path / "out"
    err = _err(_extract, path, out)  # ... but not extraction
    assert err.code in ("unsafe_archive_member", "corrupt_archive")
    assert sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) <= 1000


def test_duplicate_and_conflicting_members(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name we want
        dup = tmp_path / "dup.zip"
        with zipfile.ZipFile(dup, "w") as zf:
            zf.writestr("a.jpg", b"1")
            zf.writestr("./a.jpg", b"2")
    assert _err(list_archive, dup).code == "duplicate_archive_member"
    clash = write_tar(tmp_path, {"a": b"1", "a/b.jpg": b"2"})
    assert _err(list_archive, clash).code == "duplicate_archive_member"


def test_unsupported_and_corrupt_archives(tmp_path):
    seven = tmp_path / "x.7z"
    seven.write_bytes(b"7z\xbc\xaf\x27\x1c" + bytes(100))
    err = _err(detect_archive, seven)
    assert (err.code, err.status) == ("unsupported_archive", 400) and "7z" in err.detail
    text = tmp_path / "x.zip"
    text.write_bytes(b"not an archive at all" * 40)
    assert _err(list_archive, text).code == "unsupported_archive"
    empty = tmp_path / "empty.tar"
    empty.write_bytes(b"")
    assert _err(list_archive, empty).code == "unsupported_archive"
    good = write_zip(tmp_path, {"a.jpg": b"x" * 1000})
    cut = tmp_path / "cut.zip"
    cut.write_bytes(good.read_bytes()[:-30])
    assert (_err(list_archive, cut).code, _err(list_archive, cut).status) == ("corrupt_archive", 400)
    notar = tmp_path / "notar.tgz"
    notar.write_bytes(gzip.compress(b"hello, this is not a tar" * 50))
    assert _err(list_archive, notar).code == "corrupt_archive"


def test_encrypted_zip_member_rejected(tmp_path):
    path = write_zip(tmp_path, {"a.jpg": b"x"})
    raw = bytearray(path.read_bytes())
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # set bit 0 of the flags
        raw[raw.find(sig) + off] |= 1
    path.write_bytes(bytes(raw))
    assert _err(list_archive, path).code == "encrypted_archive_member"


def test_member_name_normalisation():
    assert normalise_member_name("./a//b/./c.jpg") == "a/b/c.jpg"
    assert normalise_member_name("a\\b.jpg") == "a/b.jpg"
    for bad in ("", "./", "a/\x00.jpg", "/x", "../x", "a/" + "x" * 300):
        with pytest.raises(IngestError):
            normalise_member_name(bad)


def test_member_index_lookup_rules():
    index = MemberIndex(["data/coco/1.jpg", "data/gqa/1.jpg", "flat/2.jpg", "3.png", "x/3.png"])
    assert index.lookup("data/coco/1.jpg") == ["data/coco/1.jpg"]  # exact
    assert index.lookup("./3.png") == ["3.png"]  # exact after normalising
    assert index.lookup("coco/1.jpg") == ["data/coco/1.jpg"]  # extra top folder in the archive
    assert index.lookup("/home/me/train/2.jpg") == ["flat/2.jpg"]  # unique basename
    assert sorted(index.lookup("1.jpg")) == ["data/coco/1.jpg", "data/gqa/1.jpg"]  # ambiguous
    assert index.lookup("4.jpg") == []


def test_copy_stops_one_byte_past_declared_size(tmp_path):
    """Our own byte counter, behind zipfile's CRC check: a source longer than declared is cut off."""
    import io

    from service.ingest.archives import ArchiveMember, _copy_bounded

    src = io.BytesIO(bytes(10_000))
    err = _err(_copy_bounded, src, tmp_path / "m", ArchiveMember("m", 100))
    assert err.code == "unsafe_archive_member" and "declared size of 100" in err.detail
    assert src.tell() == 101 and (tmp_path / "m").stat().st_size <= 100
    short = _err(_copy_bounded, io.BytesIO(b"abc"), tmp_path / "n", ArchiveMember("n", 5))
    assert short.code == "corrupt_archive" and "truncated" in short.detail
