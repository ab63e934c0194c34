"""docker-compose.yml (and its GPU override) cannot be run here (no Docker engine), so their
commands are checked directly: every `adaptinf ...` command and healthcheck parses with the real
CLI, the check paths run, and the defaults need neither a GPU nor a CUDA build."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
GPU = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())
SERVICES = COMPOSE["services"]
ADAPTINF = Path(sys.executable).parent / "adaptinf"
WORKERS = [n for n, s in SERVICES.items() if s.get("command", [])[:2] == ["adaptinf", "worker"]]


def _merged(base: dict, override: dict) -> dict:
    """Compose's merge of an override file for what these files use: mappings merge, the rest is replaced."""
    out = dict(base)
    for key, value in override.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _argv(service: dict) -> list[str]:
    return list(service.get("entrypoint", [])) + list(service.get("command", []))


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if _argv(s)[:1] == ["adaptinf"]])
def test_adaptinf_commands_parse(name):
    args = build_parser().parse_args(_argv(SERVICES[name])[1:])
    assert callable(args.func)


def test_the_api_runs_several_processes_whose_metrics_add_up():
    args = build_parser().parse_args(SERVICES["api"]["command"][1:])
    assert args.func.__name__ == "cmd_api" and args.workers >= 2 and args.host == "0.0.0.0"


def test_the_first_key_is_one_command_away():
    keys = SERVICES["keys"]
    assert keys["profiles"] == ["tools"] and keys["restart"] == "no"  # not started by `up`
    args = build_parser().parse_args(_argv(keys)[1:])
    assert args.func.__name__ == "cmd_keys_create" and args.name == "admin"
    assert "docker compose run --rm keys" in (ROOT / "docker-compose.yml").read_text()


def test_workers_cover_every_queue_with_a_default_device_that_needs_no_gpu():
    from service.broker import QUEUES
    from service.config import Settings

    served = set()
    for name in WORKERS:
        cmd = SERVICES[name]["command"]
        served |= set(cmd[cmd.index("--queues") + 1].split(","))
        device = SERVICES[name]["environment"].get("ADAPTINF_DEVICE", Settings().device)
        assert device in ("auto", "cpu"), name
        assert "deploy" not in SERVICES[name]  # a GPU reservation fails `up` on a host without one
    assert served == set(QUEUES)
    assert "cpu" in COMPOSE["x-common"]["build"]["args"]["TORCH_INDEX"]


def test_the_gpu_override_gives_gpu_worker_a_cuda_build_a_gpu_and_device_cuda():
    worker = _merged(SERVICES["gpu-worker"], GPU["services"]["gpu-worker"])
    assert worker["environment"]["ADAPTINF_DEVICE"] == "cuda"
    assert worker["environment"]["ADAPTINF_BROKER_URL"] == SERVICES["api"]["environment"]["ADAPTINF_BROKER_URL"]
    assert "/whl/cu" in worker["build"]["args"]["TORCH_INDEX"] and worker["image"] != SERVICES["api"]["image"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert set(GPU["services"]) == {"gpu-worker"}


def test_every_process_shares_database_broker_bucket_and_hf_cache():
    for name in ("migrate", "keys", "api", *WORKERS):
        env = SERVICES[name]["environment"]
        assert env["ADAPTINF_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["ADAPTINF_BROKER_URL"].startswith("redis://")
        assert env["ADAPTINF_BLOB_STORE"] == SERVICES["api"]["environment"]["ADAPTINF_BLOB_STORE"]
        assert f"hf-cache:{env['HF_HOME']}" in SERVICES[name]["volumes"]
    assert "hf-cache" in COMPOSE["volumes"]


def _env_of(name: str) -> dict[str, str]:
    """The service's environment as the container sees it (${VAR:-default} with the default)."""
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in SERVICES[name]["environment"].items()}


def test_blobs_live_in_the_bucket_that_the_one_shot_service_creates(monkeypatch):
    from service.config import Settings

    minio, bucket = SERVICES["minio"], SERVICES["bucket"]
    made = re.search(r"mc mb --ignore-existing local/(\S+)", bucket["command"][0]).group(1)
    root_user = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", minio["environment"]["MINIO_ROOT_USER"])
    for name in ("api", *WORKERS):
        env = _env_of(name)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()  # the compose values pass the checks made at load
        assert settings.blob_store_url.startswith(f"s3://{made}/")
        assert settings.s3_endpoint_url == "http://minio:9000"
        assert env["AWS_ACCESS_KEY_ID"] == root_user and env["AWS_SECRET_ACCESS_KEY"]
        depends = SERVICES[name]["depends_on"]
        assert depends["bucket"] == {"condition": "service_completed_successfully"}
        assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert bucket["restart"] == "no" and bucket["depends_on"]["minio"] == {"condition": "service_healthy"}
    assert "miniodata:/data" in minio["volumes"] and "miniodata" in COMPOSE["volumes"]


def _named_volumes(service: dict) -> set[str]:
    return {v.split(":", 1)[0] for v in service.get("volumes", []) if not v.startswith(("/", "."))}


def test_gpu_workers_need_no_shared_blob_volume():
    # Only the database, the broker and the bucket: its /data (scratch, blob cache) is its own, and
    # what it shares with other services are the model caches, which another machine fills itself.
    worker = _merged(SERVICES["gpu-worker"], GPU["services"]["gpu-worker"])
    data = [v for v in worker["volumes"] if v.split(":")[1] == worker["environment"]["ADAPTINF_DATA_DIR"]]
    assert len(data) == 1
    others = set().union(*(_named_volumes(s) for n, s in SERVICES.items() if n != "gpu-worker"))
    assert data[0].split(":")[0] not in others
    assert _named_volumes(worker) & others == {"hf-cache", "models"}
    assert "blobs" not in COMPOSE["volumes"]


def test_every_long_running_service_has_a_healthcheck_that_parses():
    for name in ("api", *WORKERS):
        test = SERVICES[name]["healthcheck"]["test"]
        assert test[0] == "CMD", name
        if test[1] == "adaptinf":
            assert build_parser().parse_args(test[2:]).func.__name__ == "cmd_worker_health"


def test_the_worker_healthcheck_runs_and_fails_without_a_worker(tmp_path):
    # the command as the container runs it; no worker has written a heartbeat here
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTINF_")}
    env.update(ADAPTINF_DATA_DIR=str(tmp_path), ADAPTINF_WORKER_HEARTBEAT_FILE=str(tmp_path / "hb"))
    test = SERVICES["gpu-worker"]["healthcheck"]["test"]
    done = subprocess.run([str(ADAPTINF), *test[2:]], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stdout.startswith("unhealthy: no heartbeat at")


@pytest.mark.parametrize("argv", [["api", "--help"], ["worker", "--help"], ["worker-health", "--help"],
                                  ["keys", "create", "--help"], ["migrate", "--help"]])
def test_the_services_commands_answer_help(argv):
    done = subprocess.run([str(ADAPTINF), *argv], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: adaptinf")


def test_the_api_image_leaves_the_ml_stack_out_and_the_workers_image_has_it():
    for name in ("migrate", "keys", "api"):
        assert SERVICES[name]["build"]["args"]["EXTRAS"] == "", name
    for name in WORKERS:
        assert "worker" in SERVICES[name]["build"]["args"]["EXTRAS"].split(","), name
        assert SERVICES[name]["image"] != SERVICES["api"]["image"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG EXTRAS=worker" in dockerfile and '".${EXTRAS:+[$EXTRAS]}"' in dockerfile
