"""The streaming multipart reader: parts go to disk as they arrive, hashed; an oversized part is
refused the moment it crosses the limit, without reading the rest of the body."""
from __future__ import annotations

import asyncio
import hashlib

import pytest
from starlette.requests import Request

from service.api.errors import ApiProblem
from service.api.uploads import receive_multipart, safe_suffix


def _body(parts, boundary="B0undary") -> bytes:
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\nContent-Type: application/octet-stream\r\n\r\n".encode()
        out += data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


class FakeStream:
    """An ASGI receive() handing the body out in fixed chunks and counting how many it handed out."""

    def __init__(self, body: bytes, chunk: int = 1000) -> None:
        self.chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]
        self.served = 0

    async def receive(self):
        i = self.served
        self.served += 1
        return {"type": "http.request", "body": self.chunks[i], "more_body": i < len(self.chunks) - 1}

    def request(self, content_length: int | None = None) -> Request:
        headers = [(b"content-type", b"multipart/form-data; boundary=B0undary")]
        if content_length is not None:
            headers.append((b"content-length", str(content_length).encode()))
        scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": headers}
        return Request(scope, self.receive)


def _receive(stream: FakeStream, dest, max_file_bytes=10_000, content_length=None):
    return asyncio.run(
        receive_multipart(
            stream.request(content_length),
            dest,
            file_fields={"file", "images"},
            text_fields={"name"},
            max_file_bytes=max_file_bytes,
        )
    )


def test_files_land_in_dest_hashed_with_their_suffix(tmp_path):
    data, archive = bytes(range(256)) * 20, b"\x1f\x8b" + b"z" * 3000
    body = _body([("name", None, "caf\u00e9".encode()), ("file", "my data.JSONL", data), ("images", "pics.tar.gz", archive)])
    form = _receive(FakeStream(body, chunk=777), tmp_path)
    assert form.fields == {"name": "caf\u00e9"}
    f, a = form.files["file"], form.files["images"]
    assert (f.filename, f.path.name, f.size) == ("my data.JSONL", "file.jsonl", len(data))
    assert f.path.parent == tmp_path and f.path.read_bytes() == data
    assert f.sha256 == hashlib.sha256(data).hexdigest()
    assert a.path.name == "images.tar.gz" and a.path.read_bytes() == archive


def test_oversized_part_is_refused_without_reading_the_rest(tmp_path):
    body = _body([("file", "d.json", b"x" * 50_000)])
    stream = FakeStream(body, chunk=1000)
    with pytest.raises(ApiProblem) as err:
        _receive(stream, tmp_path, max_file_bytes=10_000)
    assert err.value.status == 413 and err.value.code == "upload_too_large"
    assert stream.served <= 12 < len(stream.chunks)  # stopped just past 10 kB of 50 kB


def test_content_length_over_the_ceiling_is_refused_before_reading(tmp_path):
    stream = FakeStream(_body([("file", "d.json", b"x")]))
    with pytest.raises(ApiProblem) as err:
        _receive(stream, tmp_path, max_file_bytes=10, content_length=10 * 1024 * 1024)
    assert err.value.status == 413 and stream.served == 0


def test_oversized_text_field_and_too_many_parts(tmp_path):
    with pytest.raises(ApiProblem) as err:
        _receive(FakeStream(_body([("name", None, b"n" * 70_000)])), tmp_path)
    assert err.value.status == 413
    with pytest.raises(ApiProblem) as err:
        _receive(FakeStream(_body([("name", None, b"n")] * 9)), tmp_path)
    assert err.value.status == 422


@pytest.mark.parametrize(
    ("filename", "suffix"),
    [("a.json", ".json"), ("x.tar.gz", ".tar.gz"), ("IMG.ZIP", ".zip"), ("../../etc/passwd", ""),
     ("a.b c.json", ".json"), ("noext", ""), ("evil.json/..", ""), ("x.tar.g$z", "")],
)
def test_safe_suffix(filename, suffix):
    assert safe_suffix(filename) == suffix


def test_client_disconnect_is_a_400_not_a_crash(tmp_path):
    class Disconnecting(FakeStream):
        async def receive(self):
            if self.served == 2:
                return {"type": "http.disconnect"}
            return await super().receive()

    stream = Disconnecting(_body([("file", "d.json", b"x" * 5000)]), chunk=1000)
    with pytest.raises(ApiProblem) as err:
        _receive(stream, tmp_path)
    assert err.value.status == 400 and err.value.code == "client_disconnected"
