"""The worker process's start-up settings: torch's CPU threads."""
from __future__ import annotations

import pytest
import torch

from service.config import Settings, get_settings


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    get_settings.cache_clear()


def test_torch_threads_setting_limits_the_task_process(monkeypatch, restore_threads) -> None:
    import workers.celery_app as app

    monkeypatch.setattr(app, "_threads_set", False)
    monkeypatch.delenv("ADAPTINF_TORCH_THREADS", raising=False)
    get_settings.cache_clear()
    torch.set_num_threads(2)
    app._limit_torch_threads()  # unset: torch keeps its own
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("ADAPTINF_TORCH_THREADS", "1")
    get_settings.cache_clear()
    app._limit_torch_threads()  # the first task of the process sets it
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    app._limit_torch_threads()  # and later tasks leave it alone
    assert torch.get_num_threads() == 2


def test_torch_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="torch_threads"):
        Settings(torch_threads=0)
