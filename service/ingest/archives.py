"""Safe listing and extraction of an images archive (.zip, .tar, .tar.gz / .tgz).

The kind is sniffed from the bytes, not the file name. Rejected: absolute paths, '..', links,
devices and other non-regular members, encrypted zip members, duplicate paths, more members than
`max_members`, a member over `max_member_bytes`, declared sizes summing over
`max_uncompressed_bytes`. Extraction re-checks everything, then copies each member while counting
bytes, so a member that inflates past its declared size (a lying header) stops at that size.
Directory entries are ignored; names are normalised as in `names.py`.
"""
from __future__ import annotations

import hashlib
import os
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from .errors import ArchiveError
from .limits import IngestLimits
from .names import normalise_member_name

ArchiveKind = Literal["zip", "tar", "tar.gz"]
_CHUNK = 1024 * 1024
_READ_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError, ValueError, struct.error)
_OTHER_FORMATS = {b"7z\xbc\xaf": "7z", b"Rar!": "RAR", b"BZh": "bzip2", b"\xfd7zXZ": "xz", b"(\xb5/\xfd": "zstd"}


@dataclass(frozen=True)
class ArchiveMember:
    name: str  # normalised relative path
    size: int  # declared uncompressed size, bytes


@dataclass(frozen=True)
class ExtractedMember:
    name: str
    path: Path
    size: int  # bytes actually written
    sha256: str  # hex digest of the content


# One regular-file entry as a reader sees it: its member and a way to open its bytes.
_Entry = tuple[ArchiveMember, Callable[[], IO[bytes]]]


def detect_archive(path: str | os.PathLike[str]) -> ArchiveKind:
    """'zip', 'tar' or 'tar.gz' from the leading bytes; ArchiveError('unsupported_archive') otherwise."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "tar.gz"
    if head[257:262] == b"ustar":
        return "tar"
    if not head:
        raise ArchiveError("unsupported_archive", "the images archive is an empty file")
    other = next((fmt for magic, fmt in _OTHER_FORMATS.items() if head.startswith(magic)), None)
    if other is None and len(head) == 512:
        try:  # pre-POSIX (v7) tar headers carry no magic; let tarfile judge by the checksum
            with tarfile.open(path, "r:") as tf:
                if tf.next() is not None:
                    return "tar"
        except _READ_ERRORS:
            pass
    found = f"a {other} file" if other else "an unrecognised file"
    raise ArchiveError(
        "unsupported_archive", f"the images archive must be .zip, .tar or .tar.gz (.tgz); this is {found}"
    )


IMAGES = "the images archive"


def list_archive(path: str | os.PathLike[str], limits: IngestLimits = IngestLimits(),
                 label: str = IMAGES) -> list[ArchiveMember]:
    """Every regular file of the archive, after all safety and limit checks; errors call the
    archive `label`."""
    return [member for member, _ in _scan(path, limits, label)]


def iter_extract(
    path: str | os.PathLike[str],
    dest_dir: str | os.PathLike[str],
    limits: IngestLimits = IngestLimits(),
    only: Collection[str] | None = None,
    label: str = IMAGES,
) -> Iterator[ExtractedMember]:
    """Check the whole archive, then extract its files (or those named in `only`) one at a time,
    in archive order. The caller may move or delete each file as soon as it is yielded."""
    list_archive(path, limits, label)  # all-or-nothing: reject before writing anything
    dest = Path(dest_dir).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    for member, open_member in _scan(path, limits, label):
        if only is not None and member.name not in only:
            continue
        target = dest.joinpath(*member.name.split("/"))
        if dest not in target.parents:  # normalise_member_name makes this impossible; belt and braces
            raise ArchiveError("unsafe_archive_member", f"archive member {member.name!r} escapes the target folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        with _reading(member):
            src = open_member()
        try:
            size, digest = _copy_bounded(src, target, member)  # only its reads are wrapped: ENOSPC is ours
        finally:
            src.close()
        yield ExtractedMember(member.name, target, size, digest)


@contextmanager
def _reading(member: ArchiveMember) -> Iterator[None]:
    """Turn archive read failures into corrupt_archive; disk write failures (a server fault) pass."""
    try:
        yield
    except NotImplementedError as e:  # e.g. a zip compression method Python lacks
        raise ArchiveError(
            "unsupported_archive", f"archive member {member.name!r} uses an unsupported feature: {e}", member=member.name
        ) from None
    except _READ_ERRORS as e:
        raise ArchiveError(
            "corrupt_archive", f"archive member {member.name!r} cannot be read: {e}", member=member.name
        ) from None


def _copy_bounded(src: IO[bytes], target: Path, member: ArchiveMember) -> tuple[int, str]:
    digest, written = hashlib.sha256(), 0
    with open(target, "wb") as out:
        # Read at most one byte past the declared size: enough to detect a lie, never to bomb.
        while chunk := _read(src, min(_CHUNK, member.size - written + 1), member):
            written += len(chunk)
            if written > member.size:
                raise ArchiveError(
                    "unsafe_archive_member",
                    f"archive member {member.name!r} inflates beyond its declared size of {member.size} bytes",
                    member=member.name,
                )
            digest.update(chunk)
            out.write(chunk)
    if written < member.size:
        raise ArchiveError(
            "corrupt_archive",
            f"archive member {member.name!r} is truncated ({written} of {member.size} bytes)",
            member=member.name,
        )
    return written, digest.hexdigest()


def _read(src: IO[bytes], n: int, member: ArchiveMember) -> bytes:
    with _reading(member):
        return src.read(n)


def _scan(path: str | os.PathLike[str], limits: IngestLimits, label: str = IMAGES) -> Iterator[_Entry]:
    """Yield checked regular-file entries; raise on the first unsafe entry or exceeded limit."""
    kind = detect_archive(path)
    reader = _zip_entries if kind == "zip" else _tar_entries
    seen: set[str] = set()
    parents: set[str] = set()
    total = 0
    try:
        for member, opener in reader(path, kind, limits, label):
            if member.name in seen or member.name in parents:
                raise ArchiveError(
                    "duplicate_archive_member",
                    f"archive member {member.name!r} appears more than once (or is also a folder)",
                    member=member.name,
                )
            prefix = member.name.split("/")[:-1]
            for i in range(1, len(prefix) + 1):
                parent = "/".join(prefix[:i])
                if parent in seen:
                    raise ArchiveError(
                        "duplicate_archive_member",
                        f"archive member {parent!r} is a file, but {member.name!r} uses it as a folder",
                        member=member.name,
                    )
                parents.add(parent)
            seen.add(member.name)
            if member.size > limits.max_member_bytes:
                raise ArchiveError(
                    "member_too_large",
                    f"archive member {member.name!r} is {member.size} bytes uncompressed, over the limit of "
                    f"{limits.max_member_bytes}",
                    member=member.name,
                )
            total += member.size
            if total > limits.max_uncompressed_bytes:
                raise ArchiveError(
                    "archive_too_large",
                    f"{label} holds more than {limits.max_uncompressed_bytes} bytes uncompressed "
                    f"(limit exceeded at member {member.name!r})",
                    member=member.name,
                )
            yield member, opener
    except ArchiveError:
        raise
    except NotImplementedError as e:  # e.g. a zip compression method Python lacks
        raise ArchiveError("unsupported_archive", f"{label} uses an unsupported feature: {e}") from None
    except _READ_ERRORS as e:
        raise ArchiveError("corrupt_archive", f"{label} ({kind}) cannot be read: {e}") from None


def _too_many(limits: IngestLimits, label: str) -> ArchiveError:
    return ArchiveError("too_many_members", f"{label} has more than {limits.max_members} entries")


def _unsafe(name: str, why: str) -> ArchiveError:
    return ArchiveError("unsafe_archive_member", f"archive member {name[:300]!r} {why}", member=name[:300])


def _zip_entries(path: str | os.PathLike[str], kind: str, limits: IngestLimits, label: str) -> Iterator[_Entry]:
    with open(path, "rb") as f:
        declared = _zip_declared_entries(f)
    # Checked before ZipFile parses the central directory: millions of entries would cost GBs.
    if declared is not None and declared > limits.max_members:
        raise _too_many(limits, label)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        if len(infos) > limits.max_members:
            raise _too_many(limits, label)
        for info in infos:
            name = normalise_member_name(info.filename)
            mode = info.external_attr >> 16
            if info.is_dir() or stat.S_ISDIR(mode):
                continue
            if stat.S_ISLNK(mode):
                raise _unsafe(info.filename, "is a symbolic link; links are not allowed")
            if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                raise _unsafe(info.filename, "is not a regular file (device, fifo or socket)")
            if info.flag_bits & 0x1:
                raise ArchiveError(
                    "encrypted_archive_member", f"archive member {name!r} is encrypted", member=name
                )
            yield ArchiveMember(name, info.file_size), lambda info=info: zf.open(info)


def _zip_declared_entries(f: IO[bytes]) -> int | None:
    """Entry count from the end-of-central-directory record (zip64 aware); None if not found."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - (65535 + 22)))  # the record is 22 bytes plus a comment of at most 64 KiB
    tail = f.read()
    i = tail.rfind(b"PK\x05\x06")
    if i < 0 or len(tail) < i + 22:
        return None
    (entries,) = struct.unpack("<H", tail[i + 10 : i + 12])
    if entries == 0xFFFF and i >= 20 and tail[i - 20 : i - 16] == b"PK\x06\x07":
        (offset,) = struct.unpack("<Q", tail[i - 12 : i - 4])
        f.seek(offset)
        record = f.read(56)
        if record[:4] == b"PK\x06\x06":
            (entries,) = struct.unpack("<Q", record[32:40])
    return entries


def _tar_entries(path: str | os.PathLike[str], kind: str, limits: IngestLimits, label: str) -> Iterator[_Entry]:
    with tarfile.open(path, "r:gz" if kind == "tar.gz" else "r:") as tf:
        count = 0
        while (info := tf.next()) is not None:  # lazily: stop at the first problem
            count += 1
            if count > limits.max_members:
                raise _too_many(limits, label)
            name = normalise_member_name(info.name)
            if info.isdir():
                continue
            if info.issym() or info.islnk():
                raise _unsafe(info.name, f"is a {'symbolic' if info.issym() else 'hard'} link; links are not allowed")
            if info.issparse():
                raise _unsafe(info.name, "is a sparse file; sparse members are not supported")
            if not info.isreg():
                raise _unsafe(info.name, "is not a regular file (device, fifo or other special member)")
            yield ArchiveMember(name, info.size), lambda info=info: _tar_open(tf, info)
            tf.members.clear()  # TarFile keeps every header otherwise; we only stream forward


def _tar_open(tf: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
    f = tf.extractfile(info)
    if f is None:
        raise _unsafe(info.name, "is not a regular file")
    return f
