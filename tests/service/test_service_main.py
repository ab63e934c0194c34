"""The app factory: importing the API and building the app pulls in no ML framework."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# the `worker` extra of pyproject.toml (and the workers' own code): none of it in the API process
HEAVY = ("torch", "transformers", "peft", "faiss", "accelerate", "safetensors", "threadpoolctl", "gguf", "workers")


def test_creating_the_app_imports_no_heavy_framework(tmp_path):
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from service.config import Settings\n"
        "from service.main import create_app\n"
        f"s = Settings(data_dir={str(tmp_path)!r}, database_url='sqlite:///{tmp_path}/x.db', broker_url='memory://')\n"
        "with TestClient(create_app(s)) as c:\n"
        "    assert c.get('/healthz').status_code == 200\n"
        "    assert c.get('/openapi.json').status_code == 200\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_lifespan_prepares_the_data_dir(settings, tmp_path):
    from fastapi.testclient import TestClient

    from service.main import create_app

    stale = settings.work_dir / "uploads" / "deadbeef"
    stale.mkdir(parents=True)
    os.utime(stale, (0, 0))  # from a crash long ago
    fresh = settings.work_dir / "uploads" / "cafe"
    fresh.mkdir()
    with TestClient(create_app(settings)):
        assert settings.blob_dir.is_dir() and settings.work_dir.is_dir()
        assert not stale.exists() and fresh.exists()  # an upload in flight elsewhere is left alone
