"""GET /v1/rounds/{id}/map and /score-histograms on a real round: what the select stage decided."""
from __future__ import annotations

import httpx
from sqlalchemy import select

from service.db.models import PoolMember, Selection


def test_map_flags_match_the_rounds_selection_and_pruning(dashboard) -> None:  # noqa: ANN001
    round_id = dashboard.round_ids[0]
    r = dashboard.get(f"/v1/rounds/{round_id}/map")
    assert r.status_code == 200, r.text
    body = r.json()
    rnd = dashboard.get(f"/v1/rounds/{round_id}").json()
    p = body["points"]
    assert (body["object"], body["round_id"], body["pool_id"]) == ("round.map", round_id, dashboard.pool_id)
    # 14 candidates (under the 20k bound): every one mapped, each once
    assert body["candidates"] == rnd["result"]["candidates"] == len(set(p["sample_id"])) == len(p["x"]) == len(p["y"])
    with dashboard.env.factory() as s:
        selected = set(s.scalars(select(Selection.sample_id).where(Selection.round_id == round_id)))
        pruned = set(s.scalars(select(PoolMember.sample_id).where(PoolMember.pool_id == dashboard.pool_id,
                                                                  PoolMember.pruned_round == 1)))
    assert {sid for sid, f in zip(p["sample_id"], p["selected"]) if f} == selected
    assert {sid for sid, f in zip(p["sample_id"], p["pruned"]) if f} == pruned and pruned
    sizes = {c["id"]: c["size"] for c in rnd["result"]["clusters"]}
    assert {c: p["cluster"].count(c) for c in sizes} == sizes
    assert max(map(abs, p["x"])) > 0 and max(map(abs, p["y"])) > 0  # a real spread, not all zeros


def test_score_histograms_cover_each_cluster_with_an_expert(dashboard) -> None:  # noqa: ANN001
    round_id = dashboard.round_ids[0]
    body = dashboard.get(f"/v1/rounds/{round_id}/score-histograms").json()
    clusters = {c["id"]: c for c in dashboard.get(f"/v1/rounds/{round_id}").json()["result"]["clusters"]}
    assert body["object"] == "round.score_histograms" and body["histograms"]
    for h in body["histograms"]:
        c = clusters[h["cluster"]]
        assert h["expert"] == c["expert"] and len(h["edges"]) == len(h["counts"]) + 1 == len(h["selected"]) + 1
        assert sum(h["counts"]) + h["unscored"] == c["size"]
        assert sum(h["selected"]) <= c["selected"] and all(s <= n for s, n in zip(h["selected"], h["counts"]))


def test_round_views_need_the_key_and_a_finished_select_stage(dashboard) -> None:  # noqa: ANN001
    first, second = dashboard.round_ids
    assert httpx.get(f"{dashboard.base_url}/v1/rounds/{first}/map").status_code == 401
    assert dashboard.get("/v1/rounds/rnd_nope/map").json()["code"] == "not_found"
    if dashboard.get(f"/v1/rounds/{second}").json()["status"] != "succeeded":
        r = dashboard.get(f"/v1/rounds/{second}/score-histograms")
        assert (r.status_code, r.json()["code"]) == (409, "selection_not_ready")
        assert r.headers["content-type"].startswith("application/problem+json")
