"""Which base models a pool may name: presets of its type, directories under the operator's
models root (no existence oracle elsewhere), Hugging Face ids when cached or downloads are on."""
from __future__ import annotations

import pytest

from service.base_models import resolve_base_model
from service.config import Settings


def base_model_problem(name, model_type, settings):
    return resolve_base_model(name, model_type, settings)[1]


@pytest.fixture
def root(tmp_path):
    model = tmp_path / "models" / "smol"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (tmp_path / "models" / "empty").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "config.json").write_text("{}")
    (tmp_path / "models" / "escape").symlink_to(tmp_path / "outside")
    return tmp_path


def test_presets_of_the_pools_type():
    s = Settings()
    assert base_model_problem("tiny-llava", "llava", s) is None
    assert "is a causal-lm model, not llava" in base_model_problem("tiny-causal-lm", "llava", s)


def test_local_directories_only_under_the_models_root(root):
    off = Settings()
    assert "ADAPTINF_MODELS_ROOT" in base_model_problem(str(root / "models" / "smol"), "llava", off)
    s = Settings(models_root=root / "models")
    assert base_model_problem(str(root / "models" / "smol"), "llava", s) is None
    assert "no config.json" in base_model_problem(str(root / "models" / "empty"), "llava", s)
    # outside the root: one answer whether the path exists or not, symlinks, .., ~ and odd names included
    answers = {base_model_problem(p, "llava", s) for p in
               ("/etc", "/no/such/dir", str(root / "outside"), str(root / "models" / "escape"),
                str(root / "models" / ".." / "outside"), "~root/x", "~nosuchuser/x", "./models/smol",
                "/" + "x" * 300 + "/y", "/tmp/a\x00b")}
    assert len(answers) == 1 and "an absolute path under ADAPTINF_MODELS_ROOT" in answers.pop()
    # stored resolved: a symlink inside the root to a model inside the root is followed
    (root / "models" / "alias").symlink_to(root / "models" / "smol")
    assert resolve_base_model(str(root / "models" / "alias"), "llava", s) == (str((root / "models" / "smol").resolve()), None)


def test_hub_ids_need_the_cache_or_downloads(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    off = Settings()
    problem = base_model_problem("HuggingFaceTB/SmolLM2-135M-Instruct", "causal-lm", off)
    assert "ADAPTINF_ALLOW_MODEL_DOWNLOADS=true" in problem
    assert base_model_problem("HuggingFaceTB/SmolLM2-135M-Instruct", "causal-lm", Settings(allow_model_downloads=True)) is None
    # the same id once it is in the local cache (the layout huggingface_hub writes)
    repo = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    assert base_model_problem("HuggingFaceTB/SmolLM2-135M-Instruct", "causal-lm", off) is None


@pytest.mark.parametrize("name", ["not a model", "a/b/c", "x" * 300, "org/", "a--b/c", "a..b/c", "org/name.git"])
def test_anything_else_names_the_three_kinds(name):
    problem = base_model_problem(name, "llava", Settings(allow_model_downloads=True))
    assert "not a preset" in problem and "ADAPTINF_MODELS_ROOT" in problem and "org/name" in problem


def test_the_operators_allow_list_limits_hub_ids(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    s = Settings(allow_model_downloads=True, allowed_base_models="HuggingFaceTB/*, gpt2")
    assert s.allowed_base_models == ["HuggingFaceTB/*", "gpt2"]
    assert base_model_problem("HuggingFaceTB/SmolLM2-135M-Instruct", "causal-lm", s) is None
    assert base_model_problem("gpt2", "causal-lm", s) is None
    problem = base_model_problem("evil/model", "causal-lm", s)
    assert "ADAPTINF_ALLOWED_BASE_MODELS allows HuggingFaceTB/*, gpt2" in problem
    assert base_model_problem("huggingfacetb/SmolLM2", "causal-lm", s) is not None  # case counts, as on the Hub
    assert base_model_problem("gpt2-xl", "causal-lm", s) is not None  # a pattern matches the whole id
    # presets and the models root are the operator's already: the list does not apply to them
    assert base_model_problem("tiny-llava", "llava", s) is None
    # an empty list: any id, as before
    assert base_model_problem("evil/model", "causal-lm", Settings(allow_model_downloads=True)) is None


def test_problems_name_no_server_path(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    problem = base_model_problem("org/not-cached", "causal-lm", Settings())
    assert str(tmp_path) not in problem and "/" not in problem.replace("org/not-cached", "")
