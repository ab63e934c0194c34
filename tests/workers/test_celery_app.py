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
    from workers.celery_app import _limit_torch_threads

    torch.set_num_threads(2)
    monkeypatch.setenv("ADAPTINF_TORCH_THREADS", "1")
    get_settings.cache_clear()
    _limit_torch_threads()
    assert torch.get_num_threads() == 1
    monkeypatch.delenv("ADAPTINF_TORCH_THREADS")
    get_settings.cache_clear()
    torch.set_num_threads(2)
    _limit_torch_threads()  # unset: torch keeps its own
    assert torch.get_num_threads() == 2


def test_torch_threads_must_be_positive() -> None:
    with pytest.raises(ValueError, match="torch_threads"):
        Settings(torch_threads=0)
