"""Whether this install can run rounds: the `worker` extra (the ML stack) the API does without.

`adaptinf worker`, `serve` and `models build` check it first, so a base install (`pip install
adaptinf`: the API, the client, migrate) fails with the install command, not an ImportError
from deep inside the first task.
"""
from __future__ import annotations

import importlib.util
import sys

from core.worker_health import EXIT_CONFIG

# What a worker imports that the API does not: the `worker` extra of pyproject.toml.
WORKER_MODULES = ("torch", "transformers", "peft", "accelerate", "safetensors", "faiss")


def missing_worker_stack() -> str | None:
    """None when the workers' ML stack is installed, else a message naming what is missing and
    the install command (the API and the client install without it)."""
    missing = [m for m in WORKER_MODULES if importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return (f"adaptinf: running rounds needs the worker extra, and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed: pip install 'adaptinf[worker]'")


def require_worker_stack() -> None:
    """Exit with EXIT_CONFIG and the install command when the ML stack is missing."""
    problem = missing_worker_stack()
    if problem:
        print(problem, file=sys.stderr, flush=True)
        raise SystemExit(EXIT_CONFIG)
