"""The package as a user installs it: a wheel built from this tree, installed into a fresh virtualenv
without the `worker` extra (so without torch), used from a directory that is not the repository.

`adaptinf migrate` creates every table of a new SQLite database; the API app and the client import
and serve without the ML stack; `adaptinf worker` refuses with the install command. The install
takes the base dependencies from the configured package index (about 40 s with pip's cache).
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from core.worker_health import EXIT_CONFIG

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _env(**extra: str) -> dict[str, str]:
    """This environment without what points at the checkout or a deployment."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("ADAPTINF_")}
    return {**env, **extra}


def _run(argv: list[str], cwd: Path, timeout: float, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding the wheel and its base dependencies only; returns its bin directory."""
    tmp = tmp_path_factory.mktemp("packaging")
    # what the Dockerfile copies, so the build's own files (build/, *.egg-info) stay out of the checkout
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("core", "service", "workers", "migrations"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    # The build backend of this interpreter when it is recent enough, else pip's isolated build.
    setuptools_major = int(importlib.metadata.version("setuptools").split(".")[0])
    isolation = ["--no-build-isolation"] if setuptools_major >= 69 else []
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(tmp / "dist"), str(src)],
                 tmp, 300)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("adaptinf-*.whl")
    made = _run([sys.executable, "-m", "venv", str(tmp / "venv")], tmp, 120)
    assert made.returncode == 0, made.stderr[-3000:]
    bin_dir = tmp / "venv" / "bin"
    done = _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel)], tmp, 600)
    assert done.returncode == 0, done.stderr[-3000:]
    return bin_dir


def test_the_base_install_has_no_ml_stack(installed: Path, tmp_path: Path) -> None:
    code = "import importlib.util as u; print([m for m in ('torch', 'transformers', 'peft', 'faiss') if u.find_spec(m)])"
    out = _run([str(installed / "python"), "-c", code], tmp_path, 60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_migrate_from_any_directory_creates_every_table(installed: Path, tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    from service.cli.admin import alembic_config
    from service.db.models import Base

    db = tmp_path / "fresh" / "adaptinf.db"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = _run([str(installed / "adaptinf"), "migrate"], elsewhere, 120,
               ADAPTINF_DATA_DIR=str(tmp_path / "data"), ADAPTINF_DATABASE_URL=f"sqlite:///{db}")
    assert out.returncode == 0, out.stderr[-3000:]
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        (version,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert set(Base.metadata.tables) | {"alembic_version"} <= tables
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_the_api_and_the_client_run_without_the_ml_stack(installed: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "import service, service.client\n"
        "from fastapi.testclient import TestClient\n"
        "from service.cli.admin import upgrade_database\n"
        "from service.config import Settings\n"
        "from service.main import create_app\n"
        f"url = 'sqlite:///{tmp_path}/api.db'\n"
        "upgrade_database(url)\n"
        f"s = Settings(data_dir={str(tmp_path / 'data')!r}, database_url=url, broker_url='memory://')\n"
        "with TestClient(create_app(s)) as c:\n"
        "    assert c.get('/healthz').status_code == 200\n"
        "    assert c.get('/openapi.json').status_code == 200\n"
        "    assert c.get('/v1/pools').status_code == 401\n"
        "print(service.__file__)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'peft', 'faiss', 'workers'}))\n"
    )
    out = _run([str(installed / "python"), "-c", code], tmp_path, 120)
    assert out.returncode == 0, out.stderr[-3000:]
    where, heavy = out.stdout.strip().splitlines()[-2:]
    assert "site-packages" in where and str(ROOT) not in where  # the installed copy, not the checkout
    assert heavy == "[]"


def test_a_worker_without_the_extra_says_how_to_install_it(installed: Path, tmp_path: Path) -> None:
    out = _run([str(installed / "adaptinf"), "worker"], tmp_path, 60, ADAPTINF_DATA_DIR=str(tmp_path / "data"))
    assert out.returncode == EXIT_CONFIG
    assert "pip install 'adaptinf[worker]'" in out.stderr and "torch" in out.stderr
