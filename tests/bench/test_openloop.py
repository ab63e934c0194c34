"""The open-loop poller against a local HTTP server: its schedule, its mix, and a stall counted for
every request that waited behind it (no coordinated omission)."""
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.openloop import Poller


@pytest.fixture
def server():
    seen: list[tuple[float, str]] = []
    stall = {"path": None, "seconds": 0.0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            seen.append((time.monotonic(), self.path))
            if self.path == stall["path"]:
                stall["path"] = None
                time.sleep(stall["seconds"])
            code = 404 if self.path == "/missing" else 200
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", seen, stall
    httpd.shutdown()


def test_the_mix_is_sent_in_turn_at_the_rate(server):
    url, seen, _ = server
    with Poller(url, "k", {"a": "/a", "b": lambda: "/b", "gone": "/missing"}, rps=60, threads=3) as p:
        time.sleep(1.0)
    report = p.report(1.0)
    assert 50 <= report["requests"] <= 61
    counts = {name: s["requests"] for name, s in report["by_path"].items()}
    assert max(counts.values()) - min(counts.values()) <= 1
    assert report["errors"] == report["by_path"]["gone"]["requests"] > 0 and report["error_statuses"] == {"404": counts["gone"]}
    assert {path for _, path in seen} == {"/a", "/b", "/missing"}


def test_a_stall_counts_for_the_requests_that_waited_behind_it(server):
    url, _, stall = server
    stall.update(path="/slow", seconds=0.5)
    # one thread at 20 req/s: a 0.5 s stall on the first request holds back the ~10 due during it
    with Poller(url, "k", "/slow", rps=20, threads=1) as p:
        time.sleep(1.5)
    lat = sorted(p.latencies["get"])
    assert lat[-1] >= 500
    # measured from the due time, the next requests waited too (a closed loop would see one slow request)
    assert sum(ms >= 100 for ms in lat) >= 5
    assert p.errors["get"] == 0
