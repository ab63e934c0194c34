"""Streaming multipart/form-data reader: file parts go straight to disk, with a size limit per file.

The parsing is python-multipart's (its callback parser); this module only decides where each
part's bytes go. Why not Starlette's `await request.form()`: it reads the whole body before the
route runs, spools every file to the system temp folder (it has no size limit for file parts:
`max_part_size` covers text fields only), and the route must then copy and hash it again. Here
each file part is written under the service's work dir as it arrives, hashed on the way, and an
oversized part is refused (413) the moment it crosses the limit. Measured with bench/uploads.py
(one process, 2 shared cores; memory was flat for both, ~3 MiB): a 512 MiB upload took 2.4-2.8 s
with form() + copy (512 MiB also written to the temp folder) against 1.8 s here; a 512 MiB upload
over a 64 MiB limit was refused after reading all 512 MiB in 1.6 s, against 64 MiB in 0.27 s here.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from service.api.errors import ApiProblem

MAX_TEXT_FIELD_BYTES = 64 * 1024
MAX_PARTS = 8
FORM_OVERHEAD_BYTES = 1024 * 1024  # part headers, boundaries and small text fields
_SUFFIX_RE = re.compile(r"^\.[A-Za-z0-9]{1,8}$")


@dataclass
class ReceivedFile:
    field: str
    filename: str
    path: Path
    size: int = 0
    sha256: str = ""


@dataclass
class ReceivedForm:
    files: dict[str, ReceivedFile] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)


def safe_suffix(filename: str) -> str:
    """The file's extension(s), e.g. '.tar.gz', kept only when plainly alphanumeric."""
    suffixes = Path(filename.replace("\\", "/")).suffixes[-2:]
    while suffixes and not all(_SUFFIX_RE.match(s) for s in suffixes):
        suffixes = suffixes[1:]
    return "".join(suffixes).lower()


def _too_large(what: str, limit: int) -> ApiProblem:
    return ApiProblem(413, f"{what} is larger than the limit of {limit} bytes", code="upload_too_large", limit=limit)


def _bad_form(detail: str, field_name: str | None = None) -> ApiProblem:
    errors = [{"field": f"body.{field_name}", "message": detail, "type": "invalid_form"}] if field_name else []
    return ApiProblem(422, detail, code="invalid_form", errors=errors)


class _Receiver:
    """python-multipart callbacks; file data is queued and written from a worker thread."""

    def __init__(self, dest: Path, file_fields: set[str], text_fields: set[str], max_file_bytes: int) -> None:
        self.dest = dest
        self.file_fields = file_fields
        self.text_fields = text_fields
        self.max_file_bytes = max_file_bytes
        self.form = ReceivedForm()
        self.parts = 0
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""
        self.current: ReceivedFile | None = None
        self.text_name: str | None = None
        self.text = bytearray()
        self.hashers: dict[str, hashlib._Hash] = {}
        self.handles: dict[str, BinaryIO] = {}
        self.pending: list[tuple[str, bytes]] = []
        self.ended = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": lambda d, s, e: self._extend("header_name", d[s:e]),
            "on_header_value": lambda d, s, e: self._extend("header_value", d[s:e]),
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def _extend(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise _bad_form(f"too many form parts (at most {MAX_PARTS})")
        self.disposition, self.current, self.text_name = b"", None, None
        self.text = bytearray()

    def on_header_end(self) -> None:
        if self.header_name.strip().lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        expected = sorted(self.file_fields | self.text_fields)
        if not name:
            raise _bad_form("a form part has no name in its Content-Disposition header")
        if name not in self.file_fields and name not in self.text_fields:
            raise _bad_form(f"unexpected form field {name!r}; expected {', '.join(expected)}", name)
        if name in self.form.files or name in self.form.fields or name == self.text_name:
            raise _bad_form(f"form field {name!r} given more than once", name)
        filename = options.get(b"filename")
        if name in self.file_fields:
            if filename is None:
                raise _bad_form(f"{name!r} must be a file part (with a filename)", name)
            filename_s = filename.decode("utf-8", "replace")
            path = self.dest / f"{name}{safe_suffix(filename_s)}"
            self.current = ReceivedFile(field=name, filename=Path(filename_s.replace("\\", "/")).name, path=path)
            self.form.files[name] = self.current
            self.hashers[name] = hashlib.sha256()
            self.handles[name] = path.open("wb")
        else:
            self.text_name = name

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self.current is not None:
            self.current.size += len(chunk)
            if self.current.size > self.max_file_bytes:
                raise _too_large(f"form field {self.current.field!r}", self.max_file_bytes)
            self.pending.append((self.current.field, bytes(chunk)))
        else:
            self.text.extend(chunk)
            if len(self.text) > MAX_TEXT_FIELD_BYTES:
                raise _too_large(f"form field {self.text_name!r}", MAX_TEXT_FIELD_BYTES)

    def on_part_end(self) -> None:
        if self.current is None and self.text_name is not None:
            self.form.fields[self.text_name] = self.text.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.ended = True

    def flush(self) -> None:
        """Write the queued file data (called from a worker thread)."""
        for name, chunk in self.pending:
            self.hashers[name].update(chunk)
            self.handles[name].write(chunk)
        self.pending.clear()

    def close(self) -> None:
        """Close every file, even when one fails to (its buffered tail cannot be written on a
        full disk); the first such error is raised once all are closed."""
        error: OSError | None = None
        for name, handle in self.handles.items():
            try:
                handle.close()
            except OSError as exc:
                error = error or exc
            self.form.files[name].sha256 = self.hashers[name].hexdigest()
        if error is not None:
            raise error


async def _stream(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        # Nobody will read the answer; a 400 keeps this out of the error log.
        raise ApiProblem(400, "the client disconnected during the upload", code="client_disconnected") from None


async def receive_multipart(
    request: Request, dest: Path, *, file_fields: set[str], text_fields: set[str], max_file_bytes: int
) -> ReceivedForm:
    """Read a multipart/form-data body into files under `dest` (which the caller removes)."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise ApiProblem(
            415, "send the upload as multipart/form-data (or, for a dataset by reference, a JSON body)",
            code="unsupported_media_type",
        )
    length = request.headers.get("content-length")
    ceiling = len(file_fields) * max_file_bytes + FORM_OVERHEAD_BYTES
    if length is not None and length.isdigit() and int(length) > ceiling:
        raise _too_large("the request body", ceiling)
    receiver = _Receiver(dest, file_fields, text_fields, max_file_bytes)
    parser = MultipartParser(params[b"boundary"], receiver.callbacks())
    try:
        async for chunk in _stream(request):
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise _bad_form(f"malformed multipart body: {exc}") from None
            if receiver.pending:
                await run_in_threadpool(receiver.flush)
        parser.finalize()
        if not receiver.ended:  # python-multipart's finalize() does not check this itself
            raise _bad_form("the multipart body ended before its closing boundary")
    finally:
        receiver.close()
    return receiver.form
