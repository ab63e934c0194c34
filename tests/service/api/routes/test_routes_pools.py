"""Pools API: create (defaults filled, validation naming the field and value, idempotency), list,
read with member counts, evaluation sets, latest clusters, lifelong metrics against hand-computed
numbers. Runs on SQLite and the real PostgreSQL."""
from __future__ import annotations

import pytest

from service.db.models import Pool
from service.db.session import session_scope
from service.pool_config import PoolConfig
from tests.service.pool_rows import add_checkpoint, make_dataset, make_round

BASE = {"name": "p", "base_model": "tiny-llava", "model_type": "llava"}


def create(client, caller, **body):
    return client.post("/v1/pools", json=BASE | body, headers=caller.headers)


def test_create_fills_defaults_and_reads_back(client, alice):
    r = create(client, alice, config={"selection": {"n_clusters": "auto"}, "pruning": {"preset": "lite"}})
    assert r.status_code == 201, r.text
    pool = r.json()
    assert r.headers["location"] == f"/v1/pools/{pool['id']}"
    expected = PoolConfig().to_json()
    expected["selection"]["n_clusters"] = "auto"
    expected["pruning"]["preset"] = "lite"
    assert pool["config"] == expected
    assert pool["config"]["features"]["proj_dim"] == 8192 and pool["config"]["features"]["projection_nnz"] == 4
    assert pool["config"]["pruning"]["max_pool_size"] == 1_000_000  # the pool is bounded by default
    lora = pool["config"]["lora"]
    assert lora["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (lora["r"], lora["alpha"], lora["train_projector"]) == (64, 128, False)
    assert (pool["object"], pool["size"], pool["pruned"], pool["rounds_completed"]) == ("pool", 0, 0, 0)
    assert pool["current_checkpoint_id"] is None and pool["eval_sets"] == [] and pool["datasets"] == []
    assert pool.pop("warnings") == []  # only the creating response carries them
    assert client.get(f"/v1/pools/{pool['id']}", headers=alice.headers).json() == pool


@pytest.mark.parametrize(
    ("config", "field", "bad"),
    [
        ({"selection": {"n_clusters": 0}}, "body.config.selection.n_clusters", "got 0"),
        ({"selection": {"n_clusters": "many"}}, "body.config.selection.n_clusters", "got 'many'"),
        ({"selection": {"tails": [90, 10]}}, "body.config.selection.tails", "[90, 10]"),
        ({"lora": {"r": 0}}, "body.config.lora.r", "got 0"),
        ({"features": {"proj_dim": 8.5}}, "body.config.features.proj_dim", "got 8.5"),
        ({"features": {"proj_dim": 10, "projection_nnz": 4}}, "body.config.features", "divide proj_dim (10), got 4"),
        ({"lora": {"train_projector": "yes"}}, "body.config.lora.train_projector", "bool"),
        ({"pruning": {"preset": "huge"}}, "body.config.pruning.preset", "huge"),
        ({"pruning": {"budget_multiple": 0.5}}, "body.config.pruning.budget_multiple", "finite number >= 1, got 0.5"),
        ({"pruning": {"keep_per_cluster": 0}}, "body.config.pruning.keep_per_cluster", "got 0"),
        ({"pruning": {"embedding": "clip"}}, "body.config.pruning.embedding", "got 'clip'"),
        ({"pruning": {"max_pool_size": -5}}, "body.config.pruning.max_pool_size", "got -5"),
        ({"warmup_fraction": 1.5}, "body.config.warmup_fraction", "got 1.5"),
        ({"pool_index": "yes"}, "body.config.pool_index", "bool"),
        ({"training": {"max_length": 1}}, "body.config.training.max_length", "int >= 2, got 1"),
        ({"training": {"max_length": "4096"}}, "body.config.training.max_length", "got '4096'"),
        ({"selection": {"n_cluster": 5}}, "body.config.selection.n_cluster", ""),
    ],
)
def test_config_validation_names_field_and_value(client, alice, config, field, bad):
    r = create(client, alice, config=config)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["errors"][0]["field"] == field
    assert problem["detail"].startswith(field) and bad in problem["detail"]


def test_training_the_projector_needs_a_llava_model(client, alice):
    r = create(client, alice, model_type="causal-lm", config={"lora": {"train_projector": True}})
    assert r.status_code == 422 and "train_projector needs model_type 'llava'" in r.json()["detail"]
    r = create(client, alice, model_type="llava", config={"lora": {"train_projector": True}})
    assert r.status_code == 201 and r.json()["config"]["lora"]["train_projector"] is True


def test_bad_model_type_and_missing_name(client, alice):
    r = create(client, alice, model_type="diffusion")
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.model_type"
    r = client.post("/v1/pools", json={"base_model": "x", "model_type": "llava"}, headers=alice.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.name"


def test_list_pagination_and_owner_scoping(client, alice, bob):
    ids = [create(client, alice, name=f"p{i}").json()["id"] for i in range(3)]
    theirs = create(client, bob, name="bob's").json()["id"]
    page1 = client.get("/v1/pools?limit=2", headers=alice.headers).json()
    assert [p["id"] for p in page1["data"]] == ids[:2] and page1["has_more"] is True
    page2 = client.get(f"/v1/pools?limit=2&after={ids[1]}", headers=alice.headers).json()
    assert [p["id"] for p in page2["data"]] == ids[2:] and page2["has_more"] is False
    for path in ("", "/clusters", "/metrics", "/rounds"):
        r = client.get(f"/v1/pools/{theirs}{path}", headers=alice.headers)
        assert r.status_code == 404 and r.json()["code"] == "not_found", path
    assert client.get("/v1/pools", headers=bob.headers).json()["data"][0]["id"] == theirs
    assert client.get("/v1/pools").status_code == 401


def test_idempotency_key(client, alice, database_url):
    h = alice.headers | {"Idempotency-Key": "k1"}
    first = client.post("/v1/pools", json=BASE, headers=h)
    again = client.post("/v1/pools", json=BASE, headers=h)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = client.post("/v1/pools", json=BASE | {"name": "other"}, headers=h)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    with session_scope(database_url) as session:
        assert session.query(Pool).count() == 1


def test_eval_sets(client, alice, bob, database_url):
    count_ds, _ = make_dataset(database_url, alice.owner_id, 2)
    color_ds, _ = make_dataset(database_url, alice.owner_id, 2)
    pending_ds, _ = make_dataset(database_url, alice.owner_id, 2, status="pending")
    bobs_ds, _ = make_dataset(database_url, bob.owner_id, 2)

    r = create(client, alice, eval_sets=[{"dataset_id": count_ds, "skill": "count"}])
    assert r.status_code == 201, r.text
    pool = r.json()
    assert pool["eval_sets"] == [{"dataset_id": count_ds, "skill": "count"}]

    for ds, code in ((pending_ds, "dataset_not_ready"), (bobs_ds, "unknown_dataset"), ("ds_nope", "unknown_dataset")):
        r = create(client, alice, eval_sets=[{"dataset_id": count_ds, "skill": "a"}, {"dataset_id": ds, "skill": "b"}])
        assert r.status_code == 422 and r.json()["code"] == code, r.text
        assert r.json()["field"] == "body.eval_sets[1].dataset_id" and ds in r.json()["detail"]
    dup = create(client, alice, eval_sets=[{"dataset_id": count_ds, "skill": "a"}, {"dataset_id": count_ds, "skill": "b"}])
    assert dup.status_code == 422 and "twice" in dup.json()["detail"]

    bad = create(client, alice, eval_sets=[{"dataset_id": count_ds, "skill": "a\nb"}])
    assert bad.status_code == 422 and "control characters" in bad.json()["detail"]
    assert "eval_sets" in bad.json()["errors"][0]["field"] and "skill" in bad.json()["errors"][0]["field"]

    url = f"/v1/pools/{pool['id']}/eval-sets"
    assert client.post(url, json={"dataset_id": color_ds, "skill": "  "}, headers=alice.headers).status_code == 422
    r = client.post(url, json={"dataset_id": color_ds, "skill": " color "}, headers=alice.headers)  # stripped
    assert r.status_code == 201, r.text
    assert {e["skill"] for e in r.json()["eval_sets"]} == {"count", "color"}
    r = client.post(url, json={"dataset_id": color_ds, "skill": "color"}, headers=alice.headers)
    assert r.status_code == 409 and r.json()["code"] == "eval_set_exists"
    r = client.post(url, json={"dataset_id": bobs_ds, "skill": "x"}, headers=alice.headers)
    assert r.status_code == 422 and r.json()["field"] == "body.dataset_id"
    assert client.post(url, json={"dataset_id": color_ds, "skill": "x"}, headers=bob.headers).status_code == 404
    # Datasets used as evaluation sets cannot be deleted under the pool.
    assert client.delete(f"/v1/datasets/{color_ds}", headers=alice.headers).status_code == 409
    # Only pools that were created exist: the three refused creations left nothing behind.
    assert len(client.get("/v1/pools", headers=alice.headers).json()["data"]) == 1


def test_counts_clusters_after_a_round(client, alice, database_url):
    pool = create(client, alice).json()
    a, a_ids = make_dataset(database_url, alice.owner_id, 5)
    b, b_ids = make_dataset(database_url, alice.owner_id, 3)
    empty = client.get(f"/v1/pools/{pool['id']}/clusters", headers=alice.headers).json()
    assert empty == {"object": "pool.clusters", "pool_id": pool["id"], "round_id": None, "round_number": None,
                     "method": None, "clusters": []}

    first = make_round(database_url, pool["id"], alice.owner_id, number=1, selected=a_ids[:2],
                       members=a_ids[:4] + b_ids, pruned=a_ids[4:])
    clusters = [{"id": i, "size": 4 - i, "expert": "ppl", "entropies": {"ppl": 1.0}, "budget": 1, "selected": 1,
                 "pruned": 0} for i in range(2)]
    second = make_round(database_url, pool["id"], alice.owner_id, number=2, selected=a_ids[:2], clusters=clusters)
    make_round(database_url, pool["id"], alice.owner_id, number=3, status="failed", clusters=[])

    got = client.get(f"/v1/pools/{pool['id']}", headers=alice.headers).json()
    assert (got["size"], got["pruned"]) == (7, 1)
    assert got["datasets"] == sorted(
        [{"dataset_id": a, "active": 4, "pruned": 1}, {"dataset_id": b, "active": 3, "pruned": 0}],
        key=lambda d: d["dataset_id"],
    )
    latest = client.get(f"/v1/pools/{pool['id']}/clusters", headers=alice.headers).json()
    assert latest["round_id"] == second["round_id"] != first["round_id"]  # the failed round 3 is skipped
    assert latest["round_number"] == 2 and latest["clusters"] == clusters


def test_metrics_empty_then_hand_computed(client, alice, database_url, settings):
    blobs = settings.blob_store()
    e_count, _ = make_dataset(database_url, alice.owner_id, 1)
    e_color1, _ = make_dataset(database_url, alice.owner_id, 1)
    e_color2, _ = make_dataset(database_url, alice.owner_id, 1)
    e_ocr, _ = make_dataset(database_url, alice.owner_id, 1)
    sets = [{"dataset_id": e_count, "skill": "count"}, {"dataset_id": e_color1, "skill": "color"},
            {"dataset_id": e_color2, "skill": "color"}, {"dataset_id": e_ocr, "skill": "ocr"}]
    pool = create(client, alice, eval_sets=sets).json()
    url = f"/v1/pools/{pool['id']}/metrics"

    empty = client.get(url, headers=alice.headers)
    assert empty.status_code == 200
    body = empty.json()
    assert (body["skills"], body["rounds"], body["accuracy"], body["base"]) == (["color", "count", "ocr"], [], [], None)
    assert [p["status"] for p in body["per_skill"]] == ["unseen"] * 3
    assert body["summary"] == {"avg_acc": None, "forgetting": None, "backward_transfer": None,
                               "forward_transfer": None, "mft": None, "mfn": None, "maa": None,
                               "relative_gain": None, "skills_arrived": 0, "skills_unseen": 3}

    def evals(count, c1, c2, ocr, loss=(1.0, 1.0, 2.0)):
        # color is pooled over its two sets by n (10 and 30).
        return [(e_count, "count", {"accuracy": count, "loss": loss[0], "n": 10}),
                (e_color1, "color", {"accuracy": c1, "loss": loss[1], "n": 10}),
                (e_color2, "color", {"accuracy": c2, "loss": loss[2], "n": 30}),
                (e_ocr, "ocr", {"accuracy": ocr, "loss": 1.0, "n": 10})]

    # Every skill is scored after every round, as the service does. color's data comes in round 1,
    # count's in round 2 (with a color sample, which does not move color's arrival), round 3 brings
    # a skill with no evaluation set, and no training data ever declares ocr.
    train = [make_dataset(database_url, alice.owner_id, 2, skill=s)[0] for s in ("color", "count", "color", "shape")]
    new_data = [[train[0]], [train[1], train[2]], [train[3]]]
    # the base model's scores per evaluation set; ocr's set was scored a round later (added late)
    base = [{e_count: {"skill": "count", "accuracy": 0.2, "loss": 3.0, "n": 10},
             e_color1: {"skill": "color", "accuracy": 0.1, "loss": 3.0, "n": 10},
             e_color2: {"skill": "color", "accuracy": 0.3, "loss": 3.0, "n": 30}},
            {e_ocr: {"skill": "ocr", "accuracy": 0.0, "loss": 2.0, "n": 10},
             e_count: {"skill": "count", "accuracy": 0.9, "loss": 3.0, "n": 10}},  # a set scored twice: the first counts
            {}]
    rounds = [make_round(database_url, pool["id"], alice.owner_id, number=t + 1, blobs=blobs, evals=evals(*acc),
                         dataset_ids=new_data[t], base_eval_datasets=base[t])
              for t, acc in enumerate([(0.5, 0.2, 0.4, 0.1), (0.7, 0.6, 0.2, 0.2), (0.6, 0.5, 0.5, 0.3)])]
    # a warm-up checkpoint's scores are not the base: the warm-up adapter has trained already
    add_checkpoint(database_url, pool["id"], blobs, round_id=rounds[0]["round_id"], kind="warmup",
                   evals=evals(0.9, 0.9, 0.9, 0.9))
    ref_pool = create(client, alice, name="full-data").json()
    make_round(database_url, ref_pool["id"], alice.owner_id, number=1, blobs=blobs, evals=evals(0.8, 0.5, 0.5, 0.9))

    m = client.get(url, params={"reference_pool_id": ref_pool["id"]}, headers=alice.headers).json()
    # color = (10·c1 + 30·c2) / 40; skills in name order.
    expected = [[0.35, 0.5, 0.1], [0.3, 0.7, 0.2], [0.5, 0.6, 0.3]]
    assert m["skills"] == ["color", "count", "ocr"]
    assert len(m["accuracy"]) == 3
    for got_row, want_row in zip(m["accuracy"], expected):
        assert got_row == pytest.approx(want_row, abs=1e-12)
    assert [r["number"] for r in m["rounds"]] == [1, 2, 3]
    assert [r["checkpoint_id"] for r in m["rounds"]] == [r["checkpoint_id"] for r in rounds]
    assert m["rounds"][0]["loss"] == pytest.approx({"color": 1.75, "count": 1.0, "ocr": 1.0})
    assert m["base"] == {"accuracy": pytest.approx({"color": 0.25, "count": 0.2, "ocr": 0.0}),
                         "loss": {"color": 3.0, "count": 3.0, "ocr": 2.0}}
    per = {p["skill"]: p for p in m["per_skill"]}
    assert {s: (p["status"], p["arrival_round"]) for s, p in per.items()} == {
        "color": ("arrived", 1), "count": ("arrived", 2), "ocr": ("unseen", None)}
    assert per["ocr"]["trajectory"] == pytest.approx([0.1, 0.2, 0.3]) and per["ocr"]["forgetting"] is None
    assert per["color"]["forgetting"] == pytest.approx(0.35 - 0.5)  # improvement: negative forgetting
    assert per["count"]["forgetting"] == pytest.approx(0.7 - 0.6)
    assert per["color"]["forward_transfer"] is None  # arrived in round 1: no round before it
    assert per["count"]["forward_transfer"] == pytest.approx(0.5 - 0.2)  # round 1 (before arrival) − base
    s = m["summary"]
    assert (s["skills_arrived"], s["skills_unseen"]) == (2, 1)
    assert s["avg_acc"] == pytest.approx((0.5 + 0.6) / 2) and s["mfn"] == pytest.approx(s["avg_acc"])
    assert s["forgetting"] == pytest.approx(((0.35 - 0.5) + (0.7 - 0.6)) / 2)
    assert s["backward_transfer"] == pytest.approx(((0.5 - 0.35) + (0.6 - 0.7)) / 2)
    assert s["forward_transfer"] == pytest.approx(0.5 - 0.2)
    assert s["mft"] == pytest.approx((0.35 + 0.7) / 2)
    assert s["maa"] == pytest.approx((0.35 + (0.3 + 0.7) / 2 + (0.5 + 0.6) / 2) / 3)
    assert s["relative_gain"] == pytest.approx(100 * (0.5 / 0.5 + 0.6 / 0.8) / 2)  # ocr (unseen) left out
    assert m["reference_pool_id"] == ref_pool["id"]

    bad = client.get(url, params={"reference_pool_id": "pool_nope"}, headers=alice.headers)
    assert bad.status_code == 422 and bad.json()["field"] == "query.reference_pool_id"

    # Without a reference there is no relative gain; the rest is unchanged.
    plain = client.get(url, headers=alice.headers).json()["summary"]
    assert plain["relative_gain"] is None and plain["avg_acc"] == pytest.approx(s["avg_acc"])


def test_metrics_arrival_ignores_failed_rounds_and_waits_for_an_evaluation(client, alice, database_url, settings):
    blobs = settings.blob_store()
    e_a, _ = make_dataset(database_url, alice.owner_id, 1)
    e_b, _ = make_dataset(database_url, alice.owner_id, 1)
    pool = create(client, alice, eval_sets=[{"dataset_id": e_a, "skill": "a"}, {"dataset_id": e_b, "skill": "b"}]).json()
    url = f"/v1/pools/{pool['id']}/metrics"
    t_a, t_b = (make_dataset(database_url, alice.owner_id, 2, skill=s)[0] for s in ("a", "b"))

    def evals(a, b):
        return [(e_a, "a", {"accuracy": a, "loss": 1.0, "n": 4}), (e_b, "b", {"accuracy": b, "loss": 1.0, "n": 4})]

    make_round(database_url, pool["id"], alice.owner_id, number=1, blobs=blobs, evals=evals(0.5, 0.0), dataset_ids=[t_a])
    # a failed round brought b: b has not arrived
    make_round(database_url, pool["id"], alice.owner_id, number=2, status="failed", dataset_ids=[t_b])
    m = client.get(url, headers=alice.headers).json()
    assert [(p["skill"], p["status"]) for p in m["per_skill"]] == [("a", "arrived"), ("b", "unseen")]
    assert m["base"] is None and m["summary"]["forward_transfer"] is None  # no base scores recorded
    # a round without training (no checkpoint, no evaluation) brings b: arrived, not yet evaluated
    make_round(database_url, pool["id"], alice.owner_id, number=3, dataset_ids=[t_b])
    m = client.get(url, headers=alice.headers).json()
    per = {p["skill"]: p for p in m["per_skill"]}
    assert (per["b"]["status"], per["b"]["arrival_round"]) == ("not_evaluated", 3)
    assert (m["summary"]["skills_arrived"], m["summary"]["skills_unseen"]) == (1, 0)
    assert m["summary"]["avg_acc"] == pytest.approx(0.5)  # b is in no summary figure yet
    # the next evaluated round is b's arrival row
    make_round(database_url, pool["id"], alice.owner_id, number=4, blobs=blobs, evals=evals(0.25, 0.75))
    m = client.get(url, headers=alice.headers).json()
    per = {p["skill"]: p for p in m["per_skill"]}
    assert per["b"]["status"] == "arrived" and per["b"]["trajectory"] == [0.0, 0.75]
    assert m["summary"]["mft"] == pytest.approx((0.5 + 0.75) / 2)
    assert m["summary"]["forgetting"] == pytest.approx(0.5 - 0.25)  # a only: b arrived in the last row


def test_metrics_response_is_documented(client):
    schema = client.get("/openapi.json").json()
    ref = schema["paths"]["/v1/pools/{pool_id}/metrics"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ref["$ref"].endswith("/PoolMetricsOut")
    summary = schema["components"]["schemas"]["MetricsSummaryOut"]["properties"]
    assert {"forgetting", "backward_transfer", "forward_transfer", "mft", "mfn", "maa"} <= set(summary)


@pytest.mark.parametrize(
    ("config", "field", "said"),
    [
        ({"training": {"epochs": 10**9}}, "body.config.training.epochs", "at most 100 (ADAPTINF_MAX_EPOCHS), got 1000000000"),
        ({"lora": {"r": 10**9}}, "body.config.lora.r", "at most 512 (ADAPTINF_MAX_LORA_RANK)"),
        ({"features": {"proj_dim": 10**12, "projection_nnz": 1}}, "body.config.features.proj_dim", "ADAPTINF_MAX_PROJ_DIM"),
        ({"features": {"max_length": None}}, "body.config.features.max_length", "null (no limit) is above"),
        ({"training": {"max_length": None}}, "body.config.training.max_length", "null (no limit) is above"),
        ({"training": {"max_length": 10**6}}, "body.config.training.max_length",
         "at most 32768 (ADAPTINF_MAX_SEQUENCE_LENGTH), got 1000000"),
        ({"training": {"lr": 1e308}}, "body.config.training.lr", "at most 1.0 (ADAPTINF_MAX_LR)"),
        ({"shard_size": 10**7}, "body.config.shard_size", "ADAPTINF_MAX_SHARD_SIZE"),
        ({"selection": {"n_clusters": 10**6}}, "body.config.selection.n_clusters", "ADAPTINF_MAX_CLUSTERS"),
    ],
)
def test_numbers_above_the_operators_limits_are_refused(client, alice, config, field, said):
    r = create(client, alice, config=config)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json", r.text
    problem = r.json()
    assert (problem["code"], problem["field"]) == ("limit_exceeded", field)
    assert problem["detail"].startswith(field) and said in problem["detail"]
    assert client.get("/v1/pools", headers=alice.headers).json()["data"] == []  # nothing written


def test_limits_are_settings_and_every_excess_is_listed(settings, alice):
    from fastapi.testclient import TestClient

    from service.main import create_app

    with TestClient(create_app(settings.model_copy(update={"max_epochs": 1000, "max_lora_rank": 8}))) as c:
        assert create(c, alice, config={"training": {"epochs": 500}, "lora": {"r": 8}}).status_code == 201
        r = create(c, alice, config={"training": {"epochs": 5000}, "lora": {"r": 16}})
        assert r.status_code == 422
        assert [e["field"] for e in r.json()["errors"]] == ["body.config.lora.r", "body.config.training.epochs"]


@pytest.mark.parametrize("seed", [-1, 2**31, 2**70])
def test_seeds_fit_faiss(client, alice, seed):
    r = create(client, alice, config={"training": {"seed": seed}})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body.config.training.seed"
    assert "[0, 2147483647]" in r.json()["detail"]
    assert create(client, alice, config={"features": {"layers": [-1]}}).status_code == 201  # layers may be negative


@pytest.mark.parametrize(("base_model", "named"), [
    ("not/a-model", ["'not/a-model'", "ADAPTINF_ALLOW_MODEL_DOWNLOADS=true", "ADAPTINF_MODELS_ROOT", "HF_HOME"]),
    ("/etc", ["ADAPTINF_MODELS_ROOT is not set"]),
    ("gpt 2", ["'gpt 2'", "not a preset", "ADAPTINF_MODELS_ROOT", "org/name"]),
])
def test_unknown_base_models_are_refused_at_creation(client, alice, base_model, named):
    from huggingface_hub import constants

    r = create(client, alice, base_model=base_model)
    assert r.status_code == 422 and r.json()["code"] == "unknown_base_model", r.text
    assert r.json()["field"] == "body.base_model" and r.json()["errors"][0]["field"] == "body.base_model"
    # the setting to change, and the hub id or the local path expected
    assert all(n in r.json()["detail"] for n in named), r.json()["detail"]
    assert constants.HF_HUB_CACHE not in r.json()["detail"]  # no server path (the setting HF_HOME says where)
    assert client.get("/v1/pools", headers=alice.headers).json()["data"] == []
