"""Open-loop GET load on a running service: a fixed schedule of requests, latency from each request's
scheduled send time.

A closed-loop client (send, wait, send) slows down when the server stalls, so the stall shows as a
few slow requests instead of the many that a steady stream of users would have waited through
("coordinated omission"). Here request i is due at t0 + i/rps whatever happened before, and its
latency runs from that due time: a request sent late because its thread was still waiting counts
its wait.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


class Poller:
    """`threads` threads GET `paths` in turn on an open-loop schedule of `rps` requests per second in
    all (thread k sends requests k, k + threads, ...) and record each one's latency and status.

    `paths` is one path, or a {name: path or callable returning a path} mix taken in turn; a
    callable is called at each send (e.g. to follow an id that changes). Anything but a 200, or no
    answer, is an error.
    """

    def __init__(self, url: str, key: str, paths: str | Mapping[str, str | Callable[[], str]], rps: float,
                 threads: int = 4) -> None:
        import httpx

        self.mix = list(({"get": paths} if isinstance(paths, str) else paths).items())
        self.rps, self.threads_n, self.halt = rps, threads, threading.Event()
        self.clients = [httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
                        for _ in range(threads)]
        # per name: latencies in ms and error count; status codes other than 200, counted
        self.latencies: dict[str, list[float]] = {name: [] for name, _ in self.mix}
        self.errors: dict[str, int] = dict.fromkeys(self.latencies, 0)
        self.statuses: dict[str, int] = {}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True) for k in range(threads)]
        self.t0 = 0.0

    def _run(self, k: int) -> None:
        client = self.clients[k]
        for i in itertools.count(k, self.threads_n):
            due = self.t0 + i / self.rps
            if self.halt.wait(max(0.0, due - time.monotonic())):
                return
            name, path = self.mix[i % len(self.mix)]
            try:
                status = client.get(path() if callable(path) else path).status_code
            except Exception as e:  # noqa: BLE001 - no answer is an error to count, not to stop on
                status = type(e).__name__
            ms = (time.monotonic() - due) * 1000
            with self.lock:
                self.latencies[name].append(ms)
                if status != 200:
                    self.errors[name] += 1
                    self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1

    def __enter__(self) -> "Poller":
        self.t0 = time.monotonic() + 0.05  # every thread started before the first slot
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        for t in self.threads:
            t.join()
        for c in self.clients:
            c.close()

    def report(self, seconds: float) -> dict[str, Any]:
        """requests, achieved_rps, errors, p50/p99/max in ms over all requests, and the same per
        name of the mix when it has more than one."""
        out = _summary(list(itertools.chain(*self.latencies.values())), sum(self.errors.values()), seconds)
        if len(self.mix) > 1:
            out["by_path"] = {name: _summary(lat, self.errors[name], seconds) for name, lat in self.latencies.items()}
        if self.statuses:
            out["error_statuses"] = dict(self.statuses)
        return out


def _summary(latencies: list[float], errors: int, seconds: float) -> dict[str, Any]:
    lat = np.asarray(latencies)
    pct = (lambda q: round(float(np.percentile(lat, q)), 2)) if lat.size else (lambda q: None)
    return {"requests": int(lat.size), "achieved_rps": round(lat.size / max(seconds, 1e-9), 1), "errors": errors,
            "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": pct(100)}
