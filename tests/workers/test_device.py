"""ADAPTINF_DEVICE checked at start-up: what each setting resolves to, the messages for a device
this machine's torch cannot use, and a worker process that refuses to start."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from core.worker_health import EXIT_CONFIG
from workers.device import DeviceUnavailable, check_device, find_device

REPO = Path(__file__).resolve().parents[2]
ADAPTINF = Path(sys.executable).parent / "adaptinf"
# the worker tests below expect the CPU build's refusal ("built without CUDA")
no_cuda = pytest.mark.skipif(torch.version.cuda is not None, reason="torch here is a CUDA build")


def test_cpu_and_auto_always_resolve() -> None:
    assert find_device("cpu") == "cpu"
    assert find_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert check_device("auto") == "auto"  # nothing to check: no child process


@pytest.mark.skipif(torch.version.cuda is not None, reason="torch here is a CUDA build")
def test_cuda_on_a_cpu_build_names_the_setting_and_the_build() -> None:
    with pytest.raises(DeviceUnavailable, match=r"ADAPTINF_DEVICE=cuda but torch .* was built without CUDA"):
        find_device("cuda")
    # the same words come back from the child process the worker runs it in
    with pytest.raises(DeviceUnavailable, match=r"^ADAPTINF_DEVICE=cuda:1 but torch .* was built without CUDA"):
        check_device("cuda:1")


def test_a_cuda_build_without_a_gpu_or_with_too_few(monkeypatch) -> None:
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(DeviceUnavailable, match=r"ADAPTINF_DEVICE=cuda but .*CUDA 12.8.* sees no GPU "
                                                 r"\(CUDA_VISIBLE_DEVICES=''\)"):
        find_device("cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(DeviceUnavailable, match=r"ADAPTINF_DEVICE=cuda:2 but only 1 GPU\(s\) are visible"):
        find_device("cuda:2")


@no_cuda
def test_a_worker_with_a_device_it_cannot_use_exits_at_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTINF_")}
    env.update(ADAPTINF_DATA_DIR=str(tmp_path), ADAPTINF_DEVICE="cuda", PYTHONUNBUFFERED="1")
    start = time.monotonic()
    done = subprocess.run([str(ADAPTINF), "worker", "--queues", "gpu,train"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    took = time.monotonic() - start
    assert done.returncode == EXIT_CONFIG, done.stderr[-2000:]
    refusal = [line for line in done.stderr.splitlines() if "refusing to start" in line]
    assert len(refusal) == 1 and "ADAPTINF_DEVICE=cuda" in refusal[0] and "built without CUDA" in refusal[0]
    assert " ready." not in done.stdout + done.stderr and "Traceback" not in done.stderr
    assert took < 60  # a torch import and a celery start, not a wait for a round to fail
