"""The worker-extra check: silent with the ML stack installed, else exit 78 with the install command
(tests/test_packaging.py runs it for real in an install without the extra)."""
import importlib.util

import pytest

from core.worker_health import EXIT_CONFIG
from service.cli import worker_stack


def test_silent_when_the_stack_is_installed():
    assert worker_stack.missing_worker_stack() is None
    worker_stack.require_worker_stack()


def test_names_what_is_missing_and_how_to_install_it(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("torch", "faiss") else real(name, *a))
    assert worker_stack.missing_worker_stack() == (
        "adaptinf: running rounds needs the worker extra, and torch, faiss are not installed: "
        "pip install 'adaptinf[worker]'")
    with pytest.raises(SystemExit) as exc:
        worker_stack.require_worker_stack()
    assert exc.value.code == EXIT_CONFIG and "pip install 'adaptinf[worker]'" in capsys.readouterr().err
