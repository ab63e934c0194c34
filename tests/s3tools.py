"""A real S3 endpoint for the tests: moto's standalone server in its own process, on a free port.

Not an in-process mock: the code under test talks HTTP to it through boto3 exactly as it would to
AWS S3 or MinIO, so request signing, multipart uploads, ranged GETs and errors go over the wire.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class S3Endpoint:
    """Where the server listens, and the fake credentials it accepts (any are accepted)."""

    url: str
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """The environment a subprocess (a worker, `adaptinf serve`) needs to reach it."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region, "ADAPTINF_S3_ENDPOINT_URL": self.url}

    def client(self):  # noqa: ANN201
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)

    def new_bucket(self) -> str:
        """A fresh, empty bucket (one per test keeps tests independent on one shared server)."""
        name = f"t-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=name)
        return name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto_server() -> Iterator[S3Endpoint]:
    """Run `moto_server` until the generator is closed; skip when moto is not installed."""
    pytest.importorskip("moto.server", reason="moto[server] is a dev dependency")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"})
    endpoint = S3Endpoint(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on port {port}") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
