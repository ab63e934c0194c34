"""A body shorter than its Content-Length: a real uvicorn answers 408 problem+json within the body
read timeout and closes the connection, for a JSON body (read by a middleware) and an upload (read
by its route); a slow but steady body, and a keep-alive connection idle after its body, are not cut."""
from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

TIMEOUT = 1.0


@pytest.fixture
def server(settings, alice) -> Iterator[tuple[str, int]]:
    from service.main import create_app

    app = create_app(settings.model_copy(update={"body_read_timeout_seconds": TIMEOUT}))
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    yield "127.0.0.1", port
    srv.should_exit = True
    thread.join(10)


def short_body(addr, head: str, sent: bytes) -> tuple[bytes, float]:
    """Send the head and part of the body, then wait: (everything the server sent until it closed, seconds)."""
    with socket.create_connection(addr, timeout=TIMEOUT * 10) as s:
        start = time.monotonic()
        s.sendall(head.encode() + sent)
        got = b""
        while chunk := s.recv(65536):  # b"" once the server closes; socket.timeout fails the test
            got += chunk
        return got, time.monotonic() - start


def parse(raw: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, json.loads(body)


def test_short_json_body_is_a_408_and_closes(server, alice):
    head = (f"POST /v1/pools HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice.key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n")
    raw, took = short_body(server, head, b'{"name": "p"')
    status, headers, body = parse(raw)
    assert status == 408 and headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close" and body["code"] == "body_read_timeout"
    assert TIMEOUT <= took < TIMEOUT + 3


def test_short_upload_is_a_408_and_leaves_no_temp_files(server, alice, settings):
    part = b'--b\r\nContent-Disposition: form-data; name="file"; filename="d.jsonl"\r\n\r\n{"id": '
    head = (f"POST /v1/datasets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice.key}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 5000\r\n\r\n")
    raw, took = short_body(server, head, part)
    status, headers, body = parse(raw)
    assert (status, body["code"], headers["connection"]) == (408, "body_read_timeout", "close")
    assert took < TIMEOUT + 3
    uploads = settings.work_dir / "uploads"
    assert not any(uploads.iterdir())


def test_a_slow_steady_body_and_an_idle_keep_alive_are_not_cut(server, alice):
    body = json.dumps({"name": "slow", "base_model": "tiny-llava", "model_type": "llava"}).encode()

    def trickle() -> Iterator[bytes]:
        for i in range(0, len(body), 20):  # each part within the timeout, the whole well past it
            time.sleep(TIMEOUT / 2)
            yield body[i:i + 20]

    base = f"http://{server[0]}:{server[1]}"
    headers = {**alice.headers, "Content-Type": "application/json", "Content-Length": str(len(body))}
    r = httpx.post(f"{base}/v1/pools", content=trickle(), headers=headers, timeout=30)
    assert r.status_code == 201, r.text
    # After the body, receive() waits for the client's disconnect without a timeout: a keep-alive
    # connection idle past TIMEOUT still serves its next request.
    with httpx.Client(base_url=base, headers=alice.headers, timeout=30) as http:
        assert http.get("/v1/pools").status_code == 200
        time.sleep(TIMEOUT * 1.5)
        assert http.get(f"/v1/pools/{r.json()['id']}").status_code == 200
