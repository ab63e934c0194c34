"""docker-compose.yml cannot be run here (no Docker engine), so its commands are checked directly:
every `adaptinf ...` command parses with the real CLI, and the API's uvicorn factory resolves."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from service.cli import build_parser

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if s.get("command", [""])[0] == "adaptinf"])
def test_adaptinf_commands_parse(name):
    args = build_parser().parse_args(SERVICES[name]["command"][1:])
    assert callable(args.func)


def test_api_runs_the_app_factory():
    cmd = SERVICES["api"]["command"]
    assert cmd[:2] == ["uvicorn", "--factory"]
    module, attr = cmd[2].split(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_workers_cover_every_queue_and_gpu_workers_reserve_a_gpu():
    from service.broker import QUEUES

    served = set()
    for name, svc in SERVICES.items():
        cmd = svc.get("command", [])
        if cmd[:2] == ["adaptinf", "worker"]:
            served |= set(cmd[cmd.index("--queues") + 1].split(","))
    assert served == set(QUEUES)
    devices = SERVICES["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_every_process_shares_database_broker_and_blob_volume():
    for name in ("migrate", "api", "cpu-worker", "gpu-worker"):
        env = SERVICES[name]["environment"]
        assert env["ADAPTINF_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["ADAPTINF_BROKER_URL"].startswith("redis://")
        assert "blobs:/data" in SERVICES[name]["volumes"]
