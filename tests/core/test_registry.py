"""One registry: every place that lists experts or methods reads core.registry. And the layering:
the contract layer imports neither the service nor the workers, the service imports no worker
code, and the engine imports no service code."""
import ast
from pathlib import Path

from core import registry
from core.registry import BASE_METHODS, EXPERTS, METHODS

ROOT = Path(__file__).resolve().parents[2]


def test_every_consumer_uses_the_registry_tuples():
    from service import pool_config
    from service.db.models import Score
    from workers.engine.features import config as features_config
    from workers.engine.selection import config as selection_config

    assert pool_config.METHODS is METHODS
    assert features_config.SCORE_NAMES is EXPERTS
    assert selection_config.EXPERT_ORDER is EXPERTS
    # the scores table has exactly one column per expert (adding one takes a migration)
    assert [c.name for c in Score.__table__.columns if c.name not in ("round_id", "sample_id")] == list(EXPERTS)
    assert METHODS == BASE_METHODS + tuple(f"score:{e}" for e in EXPERTS)


def test_no_other_module_spells_out_the_expert_list():
    """Any tuple, list or set literal naming three or more experts, in any order or quoting, outside
    the registry (migrations are history and keep their own)."""
    hits = []
    for d in ("service", "workers", "bench", "core"):
        for path in (ROOT / d).rglob("*.py"):
            if path == Path(registry.__file__):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                    names = {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                    if len(names & set(EXPERTS)) >= 3:
                        hits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert hits == []


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out.append(node.module or "")
    return out


def test_core_imports_neither_service_nor_workers():
    for path in (ROOT / "core").rglob("*.py"):
        assert not [n for n in _imports(path) if n.split(".")[0] in ("service", "workers")], path


def test_service_and_the_engine_never_import_each_other():
    # the service starts workers and the reaper as child processes; it imports none of their code
    for path in (ROOT / "service").rglob("*.py"):
        assert not [n for n in _imports(path) if n.split(".")[0] == "workers"], path
    for path in (ROOT / "workers" / "engine").rglob("*.py"):
        assert not [n for n in _imports(path) if n.split(".")[0] == "service"], path
