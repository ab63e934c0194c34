"""JSON (one array of records) and JSON Lines: today's formats, sniffed from the first byte and
read by the streaming parsers below; a record's location is the line where it starts."""
from __future__ import annotations

import codecs
import json
import os
import re
from collections.abc import Iterator
from typing import Any, Literal

from ..errors import DatasetError
from ..limits import IngestLimits
from ..location import Location
from .base import RawRecord, RecordReader

DatasetFormat = Literal["json", "jsonl"]
_WS = re.compile(r"[ \t\n\r]*")
_UTF8_BOM = b"\xef\xbb\xbf"
_SNIFF_CHUNK = 64 * 1024
# Decoded JSON can hold a NUL or a lone surrogate only through a \u escape (raw control characters
# and invalid UTF-8 are refused earlier), so records without such an escape skip the slow walk.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


class JsonReader(RecordReader):
    """A JSON array or JSON Lines file (sniffed from its first byte)."""

    format = "json"

    def check(self) -> int | None:
        size = self.source.stat().st_size
        if size > self.limits.max_dataset_bytes:
            raise DatasetError("dataset_too_large", f"the dataset file is {size} bytes, over the limit of "
                               f"{self.limits.max_dataset_bytes}")
        detect_format(self.source)
        return None

    def records(self) -> Iterator[RawRecord]:
        for index, line, value, escaped in _iter_raw(self.source, self.limits):
            yield RawRecord(index, Location(line=line), value, escaped)


def detect_format(path: str | os.PathLike[str]) -> DatasetFormat | None:
    """'json' if the first non-space byte is '[', 'jsonl' if '{', None for an empty file."""
    with open(path, "rb") as f:
        head = f.read(4)
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise DatasetError("bad_encoding", "the dataset file is UTF-16; save it as UTF-8", line=1)
        f.seek(len(_UTF8_BOM) if head.startswith(_UTF8_BOM) else 0)
        line = 1
        while chunk := f.read(_SNIFF_CHUNK):
            stripped = chunk.lstrip(b" \t\r\n")
            if not stripped:
                line += chunk.count(b"\n")
                continue
            line += chunk[: len(chunk) - len(stripped)].count(b"\n")
            first = stripped[:1]
            if first == b"[":
                return "json"
            if first == b"{":
                return "jsonl"
            raise DatasetError(
                "unsupported_format",
                f"line {line}: the dataset must be a JSON array of samples ('[' first) or JSON Lines "
                f"(one object per line, '{{' first); found {first.decode('latin-1')!r}",
                line=line,
            )
    return None


def iter_records(path: str | os.PathLike[str], limits: IngestLimits = IngestLimits()) -> Iterator[tuple[int, int, Any]]:
    """Yield (1-based index, line, decoded JSON value) for each record, in file order.

    Both formats stream; a JSON array's syntax is checked in full first (see `_iter_raw`)."""
    for index, line, value, _ in _iter_raw(path, limits):
        yield index, line, value


def _iter_raw(path: str | os.PathLike[str], limits: IngestLimits) -> Iterator[tuple[int, int, Any, bool]]:
    """iter_records plus, per record, whether its source has an escape that may decode to NUL or
    a lone surrogate."""
    size = os.stat(path).st_size
    if size > limits.max_dataset_bytes:
        raise DatasetError(
            "dataset_too_large", f"the dataset file is {size} bytes, over the limit of {limits.max_dataset_bytes}"
        )
    fmt = detect_format(path)
    if fmt == "json":
        # A JSON array must parse as a whole before any record is judged: a syntax error anywhere
        # makes the file unreadable (400), which outranks a content error in an earlier sample.
        # So a first streaming pass checks the syntax and the second yields: twice the decoding
        # (measured: 0.8 s a pass for a 134 MB array, as long as json.loads of the whole file),
        # for memory that holds one sample and a read chunk instead of the whole file.
        try:
            for _ in _iter_json_array(path, limits):
                pass
        except DatasetError as e:
            if e.code != "bad_encoding":
                _check_utf8(path)  # invalid UTF-8 anywhere outranks the first syntax error, as before
            raise
        yield from _iter_json_array(path, limits)
    elif fmt == "jsonl":
        yield from _iter_jsonl(path, limits)


def _utf8(data: bytes, line_base: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = line_base + data.count(b"\n", 0, e.start)
        raise DatasetError(
            "bad_encoding", f"line {line}: the dataset is not valid UTF-8 (byte 0x{data[e.start]:02x})", line=line
        ) from None


def _malformed(line: int, col: int, message: str) -> DatasetError:
    return DatasetError("malformed_json", f"line {line}, column {col}: invalid JSON: {message}", line=line)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Bytes read at a time by the streaming array reader (a module constant so tests can shrink it
# and put chunk boundaries everywhere).
_READ_CHUNK = 1 << 20
# How close to the window's end an error (or a number's end) must be to mean "cut by the window":
# the longest token a cut can leave undecided, a `\uXXXX\uXXXX` pair, is 12 characters.
_CUT_MARGIN = 12


def _too_large(index: int, line: int, limit: int) -> DatasetError:
    return DatasetError("record_too_large", f"line {line}: sample #{index} is over the limit of {limit} bytes "
                        "for one sample", line=line)


def _check_utf8(path: str | os.PathLike[str]) -> None:
    """Raise bad_encoding (with its line) if the file is not UTF-8; reads it a chunk at a time."""
    with open(path, "rb") as f:
        w = _Window(f)
        while not w.eof:
            w.more(len(w.text))


def _over(text: str, limit: int) -> bool:
    """Whether `text` is over `limit` bytes in UTF-8 (a character is 1 to 4 bytes)."""
    return len(text) > limit or (4 * len(text) > limit and len(text.encode("utf-8")) > limit)


class _Window:
    """A file's text read so far and not yet parsed, a chunk at a time (UTF-8 checked incrementally).

    `text[line_pos]` is on line `line`; `col0` is the column offset of text[0] in its line. Text
    before the current element is dropped only when more is read, so the cost stays linear.
    """

    def __init__(self, f: Any) -> None:
        self.f, self.text, self.eof, self.first = f, "", False, True
        self.utf8 = codecs.getincrementaldecoder("utf-8")("strict")
        self.bytes_line, self.line, self.line_pos, self.col0 = 1, 1, 0, 0

    def more(self, keep_from: int, want: int = 0) -> int:
        """Drop text before `keep_from` (>= line_pos), read more; returns how far positions moved."""
        if self.eof:
            return 0
        cut = keep_from
        nl = self.text.rfind("\n", 0, cut)
        self.col0 = cut - nl - 1 if nl >= 0 else self.col0 + cut
        self.line += self.text.count("\n", self.line_pos, cut)
        self.line_pos = 0
        data = self.f.read(max(want, _READ_CHUNK, len(_UTF8_BOM) if self.first else 0))
        self.eof = not data
        if self.first:
            self.first = False
            data = data[len(_UTF8_BOM):] if data.startswith(_UTF8_BOM) else data
        try:
            decoded = self.utf8.decode(data, final=self.eof)
        except UnicodeDecodeError as e:
            line = self.bytes_line + e.object.count(b"\n", 0, e.start)
            raise DatasetError("bad_encoding", f"line {line}: the dataset is not valid UTF-8 "
                               f"(byte 0x{e.object[e.start]:02x})", line=line) from None
        self.bytes_line += data.count(b"\n")
        self.text = self.text[cut:] + decoded
        return cut

    def skip_ws(self, p: int) -> int:
        while True:
            p = _WS.match(self.text, p).end()
            if p < len(self.text) or self.eof:
                return p
            p -= self.more(p)

    def mark(self, p: int) -> int:
        """Line of position p (>= line_pos), which becomes the new reference point."""
        self.line += self.text.count("\n", self.line_pos, p)
        self.line_pos = p
        return self.line

    def where(self, p: int) -> tuple[int, int]:
        nl = self.text.rfind("\n", 0, p)
        return self.line + self.text.count("\n", self.line_pos, p), (p - nl if nl >= 0 else self.col0 + p + 1)


def _iter_json_array(path: str | os.PathLike[str], limits: IngestLimits) -> Iterator[tuple[int, int, Any, bool]]:
    """Decode the top-level array element by element, streaming: memory holds one sample plus a
    read chunk, not the file. Each sample knows its start line; errors name line and column.

    An element is decoded only once the window extends past its end (or the file ended), so a
    value cut by a chunk boundary is never taken for a shorter one.
    """
    decoder = json.JSONDecoder(parse_constant=_reject_constant)
    with open(path, "rb") as f:
        w = _Window(f)
        pos = w.skip_ws(0)  # at the '[' detect_format saw
        pos = w.skip_ws(pos + 1)
        if pos < len(w.text) and w.text[pos] == "]":
            rest = w.skip_ws(pos + 1)
            if rest != len(w.text):
                raise _malformed(*w.where(rest), "extra data after the top-level array")
            return
        index = 0
        while True:
            if pos >= len(w.text):
                raise _malformed(*w.where(len(w.text)), "the file ends inside the top-level array (truncated upload?)")
            line = w.mark(pos)
            while True:
                try:
                    value, end = decoder.raw_decode(w.text, pos)
                except json.JSONDecodeError as e:
                    # Only an error at the window's end, or an unterminated string, can come from a
                    # sample the window cut; any other is the file's own however much is read.
                    if w.eof or not (e.pos >= len(w.text) - _CUT_MARGIN or e.msg.startswith("Unterminated string")):
                        raise _malformed(*w.where(e.pos), e.msg) from None
                except ValueError as e:  # NaN / Infinity, from _reject_constant
                    raise _malformed(*w.where(pos), f"sample #{index + 1}: {e}") from None
                except RecursionError:
                    raise _malformed(*w.where(pos), f"sample #{index + 1} is nested too deeply") from None
                else:
                    # An object, array, string or literal ends with its last character; a number
                    # cut by the window ("1." of "1.5", "1e" of "1e5") still decodes, shorter.
                    number = isinstance(value, (int, float)) and not isinstance(value, bool)
                    if w.eof or end < len(w.text) - (_CUT_MARGIN if number else 0):
                        break
                if _over(w.text[pos:], limits.max_record_bytes):  # the rest of the window is this sample
                    raise _too_large(index + 1, line, limits.max_record_bytes)
                # Incomplete, or cut at the window's end: read more, doubling, so a large sample is
                # re-decoded O(log size) times rather than once per chunk.
                pos -= w.more(pos, len(w.text) - pos)
            if 4 * (end - pos) > limits.max_record_bytes and _over(w.text[pos:end], limits.max_record_bytes):
                raise _too_large(index + 1, line, limits.max_record_bytes)
            index += 1
            yield index, line, value, _SUSPECT_ESCAPE.search(w.text, pos, end) is not None
            pos = w.skip_ws(end)
            if pos >= len(w.text):
                raise _malformed(*w.where(len(w.text)), "the file ends inside the top-level array (truncated upload?)")
            if w.text[pos] == ",":
                pos = w.skip_ws(pos + 1)
                if pos < len(w.text) and w.text[pos] == "]":
                    raise _malformed(*w.where(pos), "trailing comma before ']'")
            elif w.text[pos] == "]":
                rest = w.skip_ws(pos + 1)
                if rest != len(w.text):
                    raise _malformed(*w.where(rest), "extra data after the top-level array")
                return
            else:
                raise _malformed(*w.where(pos), f"expected ',' or ']' after sample #{index}")


def _iter_jsonl(path: str | os.PathLike[str], limits: IngestLimits) -> Iterator[tuple[int, int, Any, bool]]:
    index = 0
    # A line's record is its bytes without a BOM and the line's end: read at most the limit plus
    # those 5 bytes plus one, and a longer line shows as a record over the limit.
    read = limits.max_record_bytes + len(_UTF8_BOM) + 3
    with open(path, "rb") as f:
        for lineno, raw in enumerate(iter(lambda: f.readline(read), b""), 1):
            cut = len(raw) == read and not raw.endswith(b"\n")  # the line goes on past what was read
            if lineno == 1 and raw.startswith(_UTF8_BOM):
                raw = raw[len(_UTF8_BOM):]
            if cut or len(raw.rstrip(b"\r\n")) > limits.max_record_bytes:
                raise _too_large(index + 1, lineno, limits.max_record_bytes)
            if not raw.strip():
                continue
            text = _utf8(raw, lineno).rstrip()
            try:
                value = json.loads(text, parse_constant=_reject_constant)
            except json.JSONDecodeError as e:
                raise _malformed(lineno, e.colno, f"{e.msg} (JSON Lines needs one complete object per line)") from None
            except ValueError as e:
                raise _malformed(lineno, 1, str(e)) from None
            except RecursionError:
                raise _malformed(lineno, 1, "nested too deeply") from None
            index += 1
            yield index, lineno, value, _SUSPECT_ESCAPE.search(text) is not None
