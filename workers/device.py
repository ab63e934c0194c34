"""The torch device a worker may use, checked once at start-up.

A wrong ADAPTINF_DEVICE (cuda on a CPU build of torch, or with no GPU visible) would otherwise
let the worker report "ready" and then fail every round with torch's own assertion. The check
runs in a child process (`python -m workers.device SETTING`): asking CUDA for its devices
initialises the driver, and a prefork worker's parent that did so could not fork children that
use CUDA; a solo worker loses only the child's start-up time, and only when the setting names cuda.
"""
from __future__ import annotations

import os
import subprocess
import sys

from core.worker_health import EXIT_CONFIG

PROBE_TIMEOUT_SECONDS = 120.0  # the whole check imports torch in 1.6 s here, idle; room for a cold, busy disk


class DeviceUnavailable(RuntimeError):
    """ADAPTINF_DEVICE names a device this machine's torch cannot use."""


def find_device(setting: str) -> str:
    """The device `setting` resolves to here ("cpu", "cuda:0", ...); raises DeviceUnavailable.

    Imports torch: call it in the process that may touch CUDA, or through `check_device`.
    """
    import torch

    if setting == "cpu":
        return "cpu"
    if setting == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    built = f"torch {torch.__version__}"
    if torch.version.cuda is None:
        raise DeviceUnavailable(
            f"ADAPTINF_DEVICE={setting} but {built} was built without CUDA; set ADAPTINF_DEVICE=auto "
            "or cpu, or install a CUDA build of torch (the image: --build-arg TORCH_INDEX=.../whl/cu128)")
    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
    if count == 0:
        raise DeviceUnavailable(
            f"ADAPTINF_DEVICE={setting} but {built} (CUDA {torch.version.cuda}) sees no GPU{where}; "
            "set ADAPTINF_DEVICE=auto or cpu, or give the worker a GPU")
    index = int(setting.partition(":")[2] or 0)
    if index >= count:
        raise DeviceUnavailable(f"ADAPTINF_DEVICE={setting} but only {count} GPU(s) are visible{where}")
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def check_device(setting: str) -> str:
    """`find_device` in a child process (see the module docstring); "cpu" and "auto" need no check."""
    if setting in ("cpu", "auto"):
        return setting
    try:
        done = subprocess.run([sys.executable, "-m", "workers.device", setting], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired as exc:
        raise DeviceUnavailable(f"ADAPTINF_DEVICE={setting}: the device check took over "
                                f"{PROBE_TIMEOUT_SECONDS:.0f}s") from exc
    if done.returncode == EXIT_CONFIG:
        raise DeviceUnavailable(done.stderr.strip())
    if done.returncode != 0:
        raise DeviceUnavailable(f"ADAPTINF_DEVICE={setting}: the device check failed "
                                f"(exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def main(argv: list[str]) -> int:
    try:
        print(find_device(argv[0]))
    except DeviceUnavailable as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
