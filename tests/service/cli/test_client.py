"""The `adaptinf` client commands against a live API (uvicorn on a free port, SQLite and
PostgreSQL): tables or --json on stdout, problems as one stderr line with exit 2, `jobs watch` and
`--wait` following jobs that a background thread moves along, downloads (checkpoint resume, sha
check), and a reader that leaves the pipe early."""
from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from apitools import serve_app
from service.cli import EXIT_BROKEN_PIPE, main
from service.db.models import Dataset, Job, Round
from service.db.session import session_scope
from service.jobs import add_event
from tests.datagen import write_llava_dataset
from tests.service.pool_rows import adapter_tar_gz, make_dataset, make_round, set_job, with_images


@pytest.fixture
def api_url(settings):
    with serve_app(settings) as url:
        yield url


@pytest.fixture
def cli(api_url, alice, capsys):
    """Run `adaptinf ARGS` as alice; returns (exit code, stdout, stderr)."""

    def run(*args: str, key: str | None = None) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([*args, "--api-url", api_url, "--api-key", key or alice.key])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _later(fn, delay: float = 0.3) -> threading.Thread:
    """Run `fn` after `delay` seconds in a thread (the 'worker' moving a job along)."""
    t = threading.Thread(target=lambda: (time.sleep(delay), fn()), daemon=True)
    t.start()
    return t


def test_pools_and_rounds(cli, alice, database_url):
    ev, _ = make_dataset(database_url, alice.owner_id, 2)
    new, _ = make_dataset(database_url, alice.owner_id, 4)
    code, out, err = cli("pools", "create", "--json", "--name", "p", "--base-model", "tiny-llava", "--model-type", "llava",
                         "--config", '{"selection": {"n_clusters": 4}}', "--eval-set", f"{ev}:count")
    assert code == 0, err
    pool = json.loads(out)
    assert pool["config"]["selection"]["n_clusters"] == 4 and pool["config"]["selection"]["n_strata"] == 50
    assert pool["eval_sets"] == [{"dataset_id": ev, "skill": "count"}]
    assert "warnings" not in pool  # none: --json shows only warnings there are
    code, out, _ = cli("pools", "show", pool["id"], "--json")
    assert code == 0 and json.loads(out) == pool

    code, out, err = cli("rounds", "start", pool["id"], "--json", "--dataset", new, "--budget", "0.5", "--method", "random",
                         "--seed", "3", "--no-prune")
    assert code == 0, err
    rnd = json.loads(out)
    assert rnd["params"] == {"dataset_ids": [new], "budget": 0.5, "method": "random", "candidates": "pool",
                             "train": True, "prune": False, "seed": 3}
    code, out, _ = cli("rounds", "show", rnd["id"], "--json")
    assert code == 0 and json.loads(out)["job_id"] == rnd["job_id"]


def test_problems_are_one_line_with_exit_2(cli, alice, bob, tmp_path):
    code, out, err = cli("pools", "create", "--name", "p", "--base-model", "m", "--model-type", "llava",
                         "--config", '{"selection": {"n_clusters": 0}}')
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: 422")
    assert "body.config.selection.n_clusters" in err and "got 0" in err
    code, out, err = cli("pools", "show", "pool_missing")
    assert (code, out) == (2, "") and err.startswith("error: 404") and "pool_missing" in err
    code, _, err = cli("pools", "show", "pool_missing", key="ak_wrong")
    assert code == 2 and err.startswith("error: 401")
    code, _, err = cli("rounds", "create", "pool_x", "--dataset", "ds_x", "--budget", "1")
    assert code == 2 and "404" in err
    with pytest.raises(SystemExit) as exc:  # argparse: bad --budget
        cli("rounds", "create", "pool_x", "--dataset", "ds_x", "--budget", "lots")
    assert exc.value.code == 2


def test_an_unreachable_api_names_the_setting(alice, capsys):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    code = main(["pools", "show", "pool_x", "--api-url", f"http://127.0.0.1:{port}", "--api-key", alice.key])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert f"cannot reach the API at http://127.0.0.1:{port}" in err and "ADAPTINF_API_URL" in err


def test_jobs_watch_and_round_wait(cli, alice, database_url, client):
    new, _ = make_dataset(database_url, alice.owner_id, 4)
    pool = client.post("/v1/pools", json={"name": "p", "base_model": "tiny-llava", "model_type": "llava"},
                       headers=alice.headers).json()
    rnd = client.post(f"/v1/pools/{pool['id']}/rounds", json={"dataset_ids": [new], "budget": 2},
                      headers=alice.headers).json()
    job_id = rnd["job_id"]

    def progress() -> None:
        set_job(database_url, job_id, status="running", stage="features", progress_done=2, progress_total=4)
        with session_scope(database_url) as session:
            add_event(session, job_id, "stage train", data={"type": "train.step", "step": 3, "loss": 1.25})
        time.sleep(1.5)  # ~30 polls of the watcher: it sees this state even on a loaded machine
        set_job(database_url, job_id, status="succeeded", stage="finalize", progress_done=4, progress_total=4)
        with session_scope(database_url) as session:
            session.get(Round, rnd["id"]).status = "succeeded"  # the worker mirrors the job onto the round

    t = _later(progress)
    code, out, err = cli("jobs", "watch", job_id, "--interval", "0.05")
    t.join()
    assert code == 0 and out == ""
    lines = err.splitlines()
    assert any(line.startswith("features") and " 2/4 " in line and "50.0%" in line for line in lines), err
    assert "  event: train.step: step 3  loss 1.25" in lines, err
    bars = [line for line in lines if "[" in line]
    assert bars[-1].startswith("finalize") and "4/4" in bars[-1] and "100.0%" in bars[-1] and "succeeded" in bars[-1]
    assert "[" + "#" * 30 + "]" in bars[-1]
    assert len(bars) == len(set(bars))  # a line per change, not per poll
    assert lines[-1].startswith(f"job {job_id} (round) succeeded") and "finalize 4/4" in lines[-1]

    # rounds create --wait on a round whose job fails: the error is printed, exit 1, round JSON on stdout.
    def fail() -> None:
        for _ in range(200):  # until the CLI has created the round
            with session_scope(database_url) as session:
                job = session.query(Job).filter(Job.kind == "round", Job.status == "queued").one_or_none()
            if job is not None:
                break
            time.sleep(0.05)
        set_job(database_url, job.id, status="failed",
                 error={"code": "out_of_memory", "message": "CUDA out of memory in shard 3"})

    t = _later(fail)
    code, out, err = cli("rounds", "create", pool["id"], "--json", "--dataset", new, "--budget", "2", "--wait",
                         "--interval", "0.05")
    t.join()
    assert code == 1
    assert "out_of_memory" in err and "CUDA out of memory in shard 3" in err
    assert json.loads(out)["number"] == 2 and json.loads(out)["job"]["status"] == "failed"


def test_upload_wait_and_list(cli, alice, database_url, tmp_path):
    dataset_file, archive = write_llava_dataset(tmp_path, 3)

    def ingest() -> None:
        with session_scope(database_url) as session:
            ds = session.query(Dataset).one()
            ds.status = "ready"
            job = session.get(Job, ds.job_id)
            job.status, job.progress_done, job.progress_total = "succeeded", 3, 3

    t = _later(ingest, 0.5)
    code, out, err = cli("datasets", "upload", str(dataset_file), "--images", str(archive), "--name", "mine",
                         "--skill", "vqa", "--wait", "--interval", "0.05", "--json")
    t.join()
    assert code == 0, err
    ds = json.loads(out)
    assert (ds["name"], ds["status"], ds["num_samples"], ds["archive_name"]) == ("mine", "ready", 3, archive.name)
    assert ds["skill"] == "vqa"
    code, out, _ = cli("datasets", "list")
    assert code == 0 and ds["id"] in out and "ready" in out
    code, out, _ = cli("datasets", "list", "--json")
    assert [d["id"] for d in json.loads(out)] == [ds["id"]]


def test_downloads(cli, alice, database_url, settings, client, tmp_path):
    blobs = settings.blob_store()
    pool = client.post("/v1/pools", json={"name": "p", "base_model": "tiny-llava", "model_type": "llava"},
                       headers=alice.headers).json()
    _, ids = make_dataset(database_url, alice.owner_id, 3, blobs=blobs)
    rnd = make_round(database_url, pool["id"], alice.owner_id, number=1, selected=ids, blobs=blobs)

    out_tar = tmp_path / "sel.tar"
    code, _, err = cli("download", "selection", rnd["round_id"], "--format", "tar", "-o", str(out_tar))
    assert code == 0, err
    with tarfile.open(out_tar) as tar:
        assert sorted(tar.getnames()) == ["img/0.png", "img/1.png", "img/2.png", "selection.jsonl"]
    code, out, _ = cli("rounds", "download", rnd["round_id"], "-o", "-")
    assert code == 0 and [json.loads(x)["adaptinf"]["sample_id"] for x in out.splitlines()] == ids

    content = adapter_tar_gz()
    target = tmp_path / "adapter.tar.gz"
    code, _, err = cli("download", "checkpoint", rnd["checkpoint_id"], "-o", str(target))
    assert code == 0 and target.read_bytes() == content and "sha256 verified" in err
    code, _, err = cli("checkpoints", "download", rnd["checkpoint_id"], "-o", str(target))
    assert code == 0 and "already complete" in err

    # A partial download resumes from where it stopped.
    target.unlink()
    part = tmp_path / "adapter.tar.gz.part"
    part.write_bytes(content[:100])
    code, _, err = cli("download", "checkpoint", rnd["checkpoint_id"], "-o", str(target))
    assert code == 0 and "resumed at byte 100" in err and f"{len(content) - 100} downloaded" in err
    assert target.read_bytes() == content and not part.exists()

    # A corrupt partial file is caught by the sha256 check and removed.
    target.unlink()
    part.write_bytes(b"\xff" * 100)
    code, _, err = cli("download", "checkpoint", rnd["checkpoint_id"], "-o", str(target))
    assert code == 1 and "does not match sha256" in err and not part.exists() and not target.exists()
    with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as tar:
        assert "adapter_config.json" in tar.getnames()


def test_list_show_and_delete_every_resource(cli, alice, database_url, settings, client):
    blobs = settings.blob_store()
    ds, sample_ids = make_dataset(database_url, alice.owner_id, 3, blobs=blobs, name="cats")
    ev, _ = make_dataset(database_url, alice.owner_id, 2, name="held-out")
    code, out, err = cli("pools", "create", "--name", "pool-one", "--base-model", "tiny-llava", "--model-type", "llava")
    assert code == 0 and "pool-one" in out and "tiny-llava (llava)" in out, err  # a summary, not JSON
    pool_id = next(p["id"] for p in json.loads(cli("pools", "list", "--json")[1]))
    code, out, _ = cli("pools", "add-eval-set", pool_id, ev, "count")
    assert code == 0 and f"{ev}:count" in out
    rnd = make_round(database_url, pool_id, alice.owner_id, number=1, selected=sample_ids, blobs=blobs,
                     dataset_ids=[ds], evals=[(ev, "count", {"accuracy": 0.5, "loss": 1.2, "n": 2})])

    tables = {
        ("datasets", "list"): [ds, ev, "cats", "ready"],
        ("datasets", "show", ds): [ds, "cats", "samples"],
        ("datasets", "samples", ds): ["s0", "s2", "question 0"],
        ("pools", "list"): [pool_id, "pool-one"],
        ("pools", "show", pool_id): [pool_id, f"{ev}:count"],
        ("pools", "clusters", pool_id): ["el2n", "expert"],
        ("pools", "metrics", pool_id): ["count", "accuracy", "forgetting"],
        ("rounds", "list", pool_id): [rnd["round_id"], "succeeded", "adapt-inf"],
        ("rounds", "show", rnd["round_id"]): [rnd["round_id"], "selected", "3 of"],
        ("jobs", "list"): [rnd["job_id"], "round"],
        ("jobs", "show", rnd["job_id"]): [rnd["job_id"], "finalize"],
        ("checkpoints", "list"): [rnd["checkpoint_id"], pool_id],
        ("checkpoints", "show", rnd["checkpoint_id"]): [rnd["checkpoint_id"], "eval count", "accuracy 0.5"],
    }
    for args, expected in tables.items():
        code, out, err = cli(*args)
        assert code == 0 and err == "", (args, err)
        assert all(x in out for x in expected), (args, out)
        assert not out.lstrip().startswith(("{", "[")), (args, out)
        code, out, _ = cli(*args, "--json")
        value = json.loads(out)
        assert code == 0 and value, args
        if args[1] == "list" and args[0] != "pools":
            assert isinstance(value, list) and all("id" in x for x in value)
    assert [s["id"] for s in json.loads(cli("datasets", "samples", ds, "--json", "--limit", "2")[1])] == sample_ids[:2]

    with session_scope(database_url) as session:
        add_event(session, rnd["job_id"], "stage select", data={"type": "stage.end", "stage": "select", "seconds": 2.5})
    code, out, _ = cli("jobs", "events", rnd["job_id"])
    assert code == 0 and "stage select (2.5 s)" in out and "stage.end" in out

    code, _, err = cli("datasets", "delete", ds)  # in the pool: the API's 409, one line
    assert code == 2 and err.startswith("error: 409") and err.count("\n") == 1
    other, _ = make_dataset(database_url, alice.owner_id, 1, name="spare")
    code, _, err = cli("datasets", "delete", other)
    assert code == 0 and f"deleted dataset {other}" in err
    assert cli("datasets", "show", other)[0] == 2

    # the 409's way out: take the dataset and the eval set out of the pool, then delete the pool
    code, _, err = cli("pools", "remove-eval-set", pool_id, ev)
    assert code == 0 and f"removed eval set {ev}" in err
    assert f"{ev}:count" not in cli("pools", "show", pool_id)[1]
    code, out, _ = cli("pools", "remove-dataset", pool_id, ds, "--json")
    assert code == 0 and json.loads(out) == {"pool_id": pool_id, "dataset_id": ds, "removed": True}
    assert cli("datasets", "delete", ds)[0] == 0
    code, _, err = cli("pools", "remove-dataset", pool_id, ds)
    assert code == 2 and "404" in err
    code, _, err = cli("pools", "delete", pool_id)
    assert code == 0 and f"deleted pool {pool_id}" in err
    assert cli("pools", "show", pool_id)[0] == 2 and json.loads(cli("pools", "list", "--json")[1]) == []


def test_jobs_cancel(cli, alice, database_url, client):
    new, _ = make_dataset(database_url, alice.owner_id, 2)
    pool = client.post("/v1/pools", json={"name": "p", "base_model": "tiny-llava", "model_type": "llava"},
                       headers=alice.headers).json()
    job_id = client.post(f"/v1/pools/{pool['id']}/rounds", json={"dataset_ids": [new], "budget": 1},
                         headers=alice.headers).json()["job_id"]
    code, out, err = cli("jobs", "cancel", job_id, "--json")
    assert code == 0 and json.loads(out)["status"] == "cancelled"
    code, _, err = cli("jobs", "cancel", job_id)
    assert code == 2 and "409" in err and "job_not_cancellable" not in err.split(":")[0]


def test_errors_name_the_setting_and_bad_input_has_no_traceback(cli, alice, tmp_path, monkeypatch, capsys):
    code, _, err = cli("pools", "show", "pool_x", key="ak_wrong")
    assert code == 2 and "401" in err and "--api-key or ADAPTINF_API_KEY" in err
    code, _, err = cli("datasets", "upload", str(tmp_path / "missing.jsonl"))
    assert code == 2 and err.startswith("error: No such file or directory") and "missing.jsonl" in err
    monkeypatch.delenv("ADAPTINF_API_KEY", raising=False)
    assert main(["jobs", "list", "--api-url", "http://127.0.0.1:9"]) == 2
    assert "--api-key or ADAPTINF_API_KEY" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: a bad --interval is a usage error, not a traceback
        main(["jobs", "watch", "job_x", "--interval", "0"])
    assert exc.value.code == 2 and "--interval must be a number of seconds > 0" in capsys.readouterr().err


def test_a_closed_pipe_ends_quietly(api_url, alice, database_url):
    """`adaptinf datasets list --json | head -1`: the reader leaves early; no traceback, exit 141."""
    for i in range(3):
        make_dataset(database_url, alice.owner_id, 1, name=f"d{i}")
    repo = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(repo), "ADAPTINF_API_URL": api_url, "ADAPTINF_API_KEY": alice.key}
    argv = [sys.executable, "-m", "service.cli", "datasets", "list", "--json"]
    # The reader closes its end before the command writes: every write then fails with EPIPE.
    read_end, write_end = os.pipe()
    os.close(read_end)
    proc = subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, env=env, cwd=repo, timeout=60)
    os.close(write_end)
    assert proc.returncode == EXIT_BROKEN_PIPE and proc.stderr == b"", proc.stderr.decode()
    # And through a shell's `| head -1`, as a user types it.
    shell = subprocess.run(["bash", "-o", "pipefail", "-c", " ".join(argv) + " | head -1"], capture_output=True,
                           env=env, cwd=repo, timeout=60)
    assert shell.stdout == b"[\n" and b"Traceback" not in shell.stderr and shell.returncode in (0, EXIT_BROKEN_PIPE)


def test_a_creating_command_prints_its_warnings(cli, alice, database_url):
    ev, _ = make_dataset(database_url, alice.owner_id, 2, name="ev")
    with_images(database_url, ev)
    code, out, err = cli("pools", "create", "--name", "text", "--base-model", "tiny-causal-lm", "--model-type",
                         "causal-lm", "--eval-set", f"{ev}:vqa")
    assert code == 0 and "text" in out
    assert err.startswith("warning: images_dropped: dataset " + ev) and err.count("\n") == 1
    code, out, err = cli("pools", "create", "--json", "--name", "text2", "--base-model", "tiny-causal-lm",
                         "--model-type", "causal-lm", "--eval-set", f"{ev}:vqa")
    assert [w["code"] for w in json.loads(out)["warnings"]] == ["images_dropped"] and "images_dropped" in err


def test_pools_index_downloads_the_verified_faiss_file(cli, alice, database_url, settings, client, tmp_path):
    import hashlib

    from index_rows import store_index

    pool = client.post("/v1/pools", json={"name": "p", "base_model": "tiny-llava", "model_type": "llava",
                                          "config": {"pool_index": True}}, headers=alice.headers).json()["id"]
    rnd = make_round(database_url, pool, alice.owner_id, number=1)
    stored = store_index(database_url, settings.blob_store(), settings.work_dir, pool, rnd["round_id"], 1)
    target = tmp_path / "pool.faiss"
    code, _, err = cli("pools", "index", pool, "-o", str(target))
    assert code == 0, err
    assert hashlib.sha256(target.read_bytes()).hexdigest() == stored.sha256
    assert "sha256 verified" in err and f"round 1, {len(stored.survivors)} vectors of 16 dims" in err
    code, _, err = cli("pools", "index", pool, "-o", str(target), "--round", "1")
    assert code == 0 and "already complete" in err
    code, _, err = cli("pools", "index", pool, "--round", "2", "-o", str(tmp_path / "x.faiss"))
    assert code == 2 and "round 2" in err and not (tmp_path / "x.faiss").exists()
    with pytest.raises(SystemExit) as exc:  # argparse refuses it before any request
        cli("pools", "index", pool, "--round", "0")
    assert exc.value.code == 2


def test_upload_by_reference(alice, settings, tmp_path, capsys):
    """`datasets upload --uri`: the server reads the file itself; outside its prefixes it refuses (exit 2)."""
    allowed = tmp_path / "shared"
    dataset_file, archive = write_llava_dataset(allowed, 3)
    with serve_app(settings.model_copy(update={"ingest_allowed_prefixes": [f"file://{allowed}"]})) as url:
        def run(*args: str) -> tuple[int, str, str]:
            capsys.readouterr()
            code = main([*args, "--api-url", url, "--api-key", alice.key])
            return (code, *capsys.readouterr())

        code, out, err = run("datasets", "upload", "--uri", f"file://{dataset_file}", "--images-uri",
                             f"file://{archive}", "--json")
        assert code == 0, err
        ds = json.loads(out)
        assert (ds["status"], ds["file_name"], ds["archive_name"]) == ("pending", f"file://{dataset_file}",
                                                                        f"file://{archive}")
        code, _, err = run("datasets", "upload", "--uri", f"file://{tmp_path}/elsewhere.json")
        assert code == 2 and "403" in err and "ADAPTINF_INGEST_ALLOWED_PREFIXES" in err
        code, _, err = run("datasets", "upload", str(dataset_file), "--uri", f"file://{dataset_file}")
        assert code == 2 and "give a FILE to upload or --uri" in err
