// The Adapt-∞ dashboard: three views over the public API, routed by the URL's hash.
//   #/                pools
//   #/pools/<id>      a pool: rounds (live), latest clusters, accuracy heatmap, forgetting
//   #/rounds/<id>     a round: live job progress, cluster map, per-cluster experts, budgets, score histograms
// Every request carries the API key the user typed (kept in sessionStorage, so it ends with the tab).
"use strict";
(() => {
  const KEY = "adaptinf.apiKey";
  const POLL_MS = 2000;
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf"];
  const PLOT_CONFIG = { displaylogo: false, responsive: true };
  const SMALL_PLOT = { ...PLOT_CONFIG, displayModeBar: false };  // small charts: the toolbar would cover the title
  const view = document.getElementById("view");
  let timers = [];  // the current view's polling; cleared when the user navigates away
  let renderId = 0;  // a slow answer for a view the user already left is dropped

  // ---- helpers -------------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v; else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat(Infinity)) {
      if (c !== null && c !== undefined && c !== false) node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  const fmt = (v, digits = 3) => (v === null || v === undefined || Number.isNaN(v) ? "—"
    : typeof v === "number" && !Number.isInteger(v) ? v.toFixed(digits) : String(v));
  const pct = (f) => (f === null || f === undefined ? "—" : `${(100 * f).toFixed(1)}%`);
  const color = (cluster) => COLORS[cluster % COLORS.length];

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    const s = Math.max(0, Math.round(seconds));
    return s >= 3600 ? `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`
      : s >= 60 ? `${Math.floor(s / 60)}m ${s % 60}s` : `${s}s`;
  }

  class ApiError extends Error {
    constructor(status, detail, code) { super(detail); this.status = status; this.code = code; }
  }

  async function api(path) {
    const r = await fetch(path, { headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY)}`,
                                             Accept: "application/json" } });
    if (!r.ok) {
      let body = {};
      try { body = await r.json(); } catch (e) { /* not problem+json: keep the status text */ }
      throw new ApiError(r.status, body.detail || r.statusText, body.code);
    }
    return r.json();
  }

  async function listAll(path) {
    const items = [];
    for (let after = null; ;) {
      const sep = path.includes("?") ? "&" : "?";
      const page = await api(`${path}${sep}limit=100${after ? `&after=${encodeURIComponent(after)}` : ""}`);
      items.push(...page.data);
      if (!page.has_more || !page.data.length) return items;
      after = page.data[page.data.length - 1].id;
    }
  }

  function facts(pairs) {
    return el("dl", { class: "facts" }, pairs.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }

  function table(headers, rows, numeric = []) {
    return el("table", {},
      el("thead", {}, el("tr", {}, headers.map((h, i) => el("th", { class: numeric.includes(i) ? "num" : null }, h)))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c, i) => el("td", { class: numeric.includes(i) ? "num" : null }, c))))));
  }

  function bar(fraction) {
    const f = Math.max(0, Math.min(1, fraction || 0));
    return el("span", { class: "bar", title: pct(fraction) }, el("span", { style: `width:${(100 * f).toFixed(1)}%` }));
  }

  const statusCell = (s) => el("span", { class: `status-${s}` }, s);
  const card = (title, ...body) => el("section", { class: "card" }, title ? el("h2", {}, title) : null, ...body);
  const chart = (id, small) => el("div", { id, class: small ? "chart small" : "chart" });

  function setCrumbs(...links) {
    const nav = document.getElementById("crumbs");
    nav.replaceChildren(...links.flatMap((l, i) => [i ? " / " : "", l.href ? el("a", { href: l.href }, l.text) : l.text]));
  }

  // a poll that fails (the API restarting, say) is retried at the next tick, not left unhandled
  function every(ms, fn) {
    timers.push(setInterval(() => fn().catch((err) => console.warn("poll failed:", err.message)), ms));
  }

  // ---- job progress --------------------------------------------------------------------------

  // Shows what the job reports: the per-stage fields (unit, rate, ETA), overall progress and
  // training metrics when the API sends them, and plain done/total otherwise.
  function progressBlock(job) {
    const p = job.progress || {};
    const overall = job.overall || null;
    const fraction = overall && overall.fraction !== undefined && overall.fraction !== null ? overall.fraction
      : p.total ? p.done / p.total : TERMINAL.has(job.status) && job.status === "succeeded" ? 1 : 0;
    const unit = p.unit ? ` ${p.unit}` : "";
    const parts = [`${job.stage || "—"}: ${fmt(p.done)}/${fmt(p.total)}${unit}`];
    if (p.rate !== undefined && p.rate !== null) parts.push(`${fmt(p.rate, 1)}${unit || " items"}/s`);
    if (p.eta_seconds !== undefined && p.eta_seconds !== null) parts.push(`stage ETA ${duration(p.eta_seconds)}`);
    const rows = [["status", statusCell(job.status)], ["stage", parts.join(" · ")],
                  ["overall", el("span", {}, bar(fraction), " ", pct(fraction))]];
    if (overall && overall.eta_seconds !== undefined && overall.eta_seconds !== null) rows.push(["ETA", duration(overall.eta_seconds)]);
    if (overall && Array.isArray(overall.stages) && overall.stages.length) {
      rows.push(["stages", overall.stages.map((s) => (typeof s === "string" ? s
        : `${s.name || s.stage}${s.status ? ` (${s.status}${typeof s.fraction === "number" ? ` ${pct(s.fraction)}` : ""})` : ""}`))
        .join(" → ")]);
    }
    for (const [k, v] of Object.entries(job.metrics || {})) rows.push([k, fmt(v, 4)]);
    if (job.error) rows.push(["error", el("span", { class: "error" }, `${job.error.code}: ${job.error.message}`)]);
    return facts(rows);
  }

  // ---- views ---------------------------------------------------------------------------------

  async function poolsView(my) {
    setCrumbs({ text: "pools" });
    const pools = await listAll("/v1/pools");
    if (my !== renderId) return;
    view.replaceChildren(el("h1", {}, "Pools"), card(null, pools.length ? table(
      ["name", "id", "base model", "type", "active", "pruned", "rounds", "evaluation sets"],
      pools.map((p) => [el("a", { href: `#/pools/${p.id}` }, p.name), p.id, p.base_model, p.model_type, p.size, p.pruned,
                        p.rounds_completed, p.eval_sets.map((e) => e.skill).join(", ") || "—"]), [4, 5, 6])
      : el("p", { class: "muted" }, "No pools yet: create one with POST /v1/pools or `adaptinf pools create`.")));
  }

  function roundRows(rounds) {
    return rounds.map((r) => {
      const res = r.result || {};
      const job = r.job || {};
      const p = job.progress || {};
      const live = TERMINAL.has(r.status) ? "" : el("span", {}, bar(p.total ? p.done / p.total : 0), ` ${job.stage || ""} ${fmt(p.done)}/${fmt(p.total)}`);
      return [el("a", { href: `#/rounds/${r.id}` }, `round ${r.number}`), statusCell(r.status), live,
              r.params.method || "adapt-inf", fmt(res.candidates), fmt(res.budget), fmt(res.selected), fmt(res.pruned),
              fmt(res.pool_size), res.train ? fmt(res.train.loss_last, 4) : "—"];
    });
  }

  async function poolView(my, poolId) {
    const [pool, rounds, clusters, metrics] = await Promise.all([
      api(`/v1/pools/${poolId}`), listAll(`/v1/pools/${poolId}/rounds`), api(`/v1/pools/${poolId}/clusters`),
      api(`/v1/pools/${poolId}/metrics`)]);
    if (my !== renderId) return;
    setCrumbs({ text: "pools", href: "#/" }, { text: pool.name });
    const roundsBody = el("div", { id: "rounds" });
    const drawRounds = (rs) => roundsBody.replaceChildren(rs.length ? table(
      ["round", "status", "progress", "method", "candidates", "budget", "selected", "pruned", "pool size", "train loss"],
      roundRows(rs), [4, 5, 6, 7, 8, 9]) : el("p", { class: "muted" }, "No rounds yet."));
    drawRounds(rounds);
    view.replaceChildren(
      el("h1", {}, `Pool ${pool.name}`),
      card(null, facts([["id", pool.id], ["base model", pool.base_model], ["type", pool.model_type],
                        ["active samples", pool.size], ["pruned samples", pool.pruned],
                        ["rounds completed", pool.rounds_completed],
                        ["evaluation sets", pool.eval_sets.map((e) => `${e.skill} (${e.dataset_id})`).join(", ") || "none"]])),
      card("Rounds", roundsBody),
      clustersCard(clusters.clusters, clusters.round_number === null ? "No succeeded round yet."
        : `Pseudo-skill clusters of round ${clusters.round_number} (${clusters.method}).`),
      metricsCard(metrics));
    drawClusterBars("cluster-bars", clusters.clusters);
    drawMetrics(metrics);
    if (rounds.some((r) => !TERMINAL.has(r.status))) {
      every(POLL_MS, async () => {
        const rs = await listAll(`/v1/pools/${poolId}/rounds`);
        if (my !== renderId) return;
        drawRounds(rs);
        if (!rs.some((r) => !TERMINAL.has(r.status))) route();  // a round ended: clusters and metrics changed
      });
    }
  }

  function clustersCard(clusters, caption) {
    if (!clusters.length) return card("Clusters", el("p", { class: "muted" }, caption));
    return card("Clusters", el("p", { class: "muted" }, caption),
      el("div", { class: "grid2" },
        table(["cluster", "size", "expert", "budget", "selected", "pruned", "expert entropy (bits)"],
          clusters.map((c) => [el("span", { style: `color:${color(c.id)}` }, `● ${c.id}`), c.size, c.expert || "—", c.budget,
                               c.selected, c.pruned, c.expert ? fmt((c.entropies || {})[c.expert]) : "—"]), [1, 3, 4, 5, 6]),
        chart("cluster-bars", true)));
  }

  function drawClusterBars(id, clusters) {
    if (!clusters.length) return;
    const x = clusters.map((c) => `cluster ${c.id}`);
    Plotly.newPlot(id, [["size", "size"], ["budget", "budget"], ["selected", "selected"], ["pruned", "pruned"]].map(
      ([name, key]) => ({ type: "bar", name, x, y: clusters.map((c) => c[key]) })),
    { barmode: "group", margin: { t: 10, r: 10, b: 40, l: 40 }, legend: { orientation: "h" } }, SMALL_PLOT);
  }

  function metricsCard(m) {
    if (!m.rounds.length || !m.skills.length) {
      return card("Accuracy and forgetting", el("p", { class: "muted" }, m.skills.length
        ? "No evaluated round yet: the matrix fills in as rounds finish."
        : "This pool has no evaluation sets: add one (POST /v1/pools/{id}/eval-sets) to measure accuracy and forgetting."));
    }
    const s = m.summary;
    return card("Accuracy and forgetting",
      facts([["average accuracy", pct(s.avg_acc)], ["forgetting", fmt(s.forgetting)],
             ["backward transfer", fmt(s.backward_transfer)], ["forward transfer", fmt(s.forward_transfer)],
             ["MFT", fmt(s.mft)], ["MFN", fmt(s.mfn)], ["MAA", fmt(s.maa)],
             ["skills arrived / unseen", `${s.skills_arrived} / ${s.skills_unseen}`]]),
      el("div", { class: "grid2" }, chart("accuracy-heatmap"), chart("forgetting-lines")),
      table(["skill", "status", "arrived in round", "final accuracy", "forgetting", "backward transfer", "forward transfer"],
        m.per_skill.map((p) => [p.skill, p.status, fmt(p.arrival_round), pct(p.final), fmt(p.forgetting),
                                fmt(p.backward_transfer), fmt(p.forward_transfer)]), [2, 3, 4, 5, 6]));
  }

  // Forgetting of each skill after every evaluated round since its arrival: the best accuracy
  // from its arrival row to the row before, minus the accuracy now (the API's definition, per row).
  function forgettingOverRounds(m) {
    const numbers = m.rounds.map((r) => r.number);
    return m.per_skill.map((p, j) => {
      const start = p.arrival_round === null ? -1 : numbers.findIndex((n) => n >= p.arrival_round);
      const x = [], y = [];
      for (let t = start + 1; start >= 0 && t < numbers.length; t++) {
        const before = m.accuracy.slice(start, t).map((row) => row[j]).filter((v) => v !== null);
        const now = m.accuracy[t][j];
        if (before.length && now !== null) { x.push(numbers[t]); y.push(Math.max(...before) - now); }
      }
      return { skill: p.skill, x, y };
    });
  }

  function drawMetrics(m) {
    if (!m.rounds.length || !m.skills.length) return;
    const rows = m.rounds.map((r) => `round ${r.number}`);
    Plotly.newPlot("accuracy-heatmap", [{
      type: "heatmap", z: m.accuracy, x: m.skills, y: rows, zmin: 0, zmax: 1, colorscale: "Viridis",
      text: m.accuracy.map((row) => row.map((v) => (v === null ? "" : v.toFixed(2)))), texttemplate: "%{text}",
      hovertemplate: "%{y}, %{x}: %{z:.3f}<extra></extra>", colorbar: { title: { text: "accuracy" } },
    }], { title: { text: "accuracy a[t][skill]" }, margin: { t: 40, r: 10, b: 60, l: 70 },
          yaxis: { autorange: "reversed" } }, SMALL_PLOT);
    const lines = forgettingOverRounds(m).filter((s) => s.x.length);
    const layout = { title: { text: "forgetting per skill over rounds" }, showlegend: true, margin: { t: 40, r: 10, b: 50, l: 50 },
                     xaxis: { title: { text: "round" }, dtick: 1 }, yaxis: { title: { text: "forgetting" }, zeroline: true } };
    if (!lines.length) {
      layout.annotations = [{ text: "needs a second evaluated round after a skill arrives", showarrow: false,
                              xref: "paper", yref: "paper", x: 0.5, y: 0.5 }];
    }
    Plotly.newPlot("forgetting-lines", lines.map((s) => ({ type: "scatter", mode: "lines+markers", name: s.skill, x: s.x, y: s.y })),
      layout, SMALL_PLOT);
  }

  async function roundView(my, roundId) {
    const rnd = await api(`/v1/rounds/${roundId}`);
    if (my !== renderId) return;
    const pool = await api(`/v1/pools/${rnd.pool_id}`);
    if (my !== renderId) return;
    setCrumbs({ text: "pools", href: "#/" }, { text: pool.name, href: `#/pools/${pool.id}` }, { text: `round ${rnd.number}` });
    const res = rnd.result || {};
    // the job itself, not the round's summary of it: it carries the overall progress and live metrics
    const job = rnd.job_id ? await api(`/v1/jobs/${rnd.job_id}`) : null;
    if (my !== renderId) return;
    const progress = el("div", { id: "job-progress" }, job ? progressBlock(job) : el("p", { class: "muted" }, "No job."));
    const selectDone = rnd.status === "succeeded" || (rnd.status === "running" && ["train", "eval", "finalize"].includes(rnd.job && rnd.job.stage));
    view.replaceChildren(
      el("h1", {}, `Round ${rnd.number} of ${pool.name}`),
      card(null, facts([["id", rnd.id], ["status", statusCell(rnd.status)], ["method", rnd.params.method || "adapt-inf"],
                        ["datasets", rnd.params.dataset_ids.join(", ")], ["candidates", fmt(res.candidates)],
                        ["new samples", fmt(res.new_samples)], ["budget", fmt(res.budget)], ["selected", fmt(res.selected)],
                        ["pruned", fmt(res.pruned)], ["pool size after", fmt(res.pool_size)],
                        ["train loss (first → last)", res.train ? `${fmt(res.train.loss_first, 4)} → ${fmt(res.train.loss_last, 4)}` : "—"]])),
      card("Job progress", progress),
      res.clusters ? clustersCard(res.clusters, `${res.clusters.length} clusters; budget ${res.budget} split over them.`)
        : card("Clusters", el("p", { class: "muted" }, "The clusters appear when the round succeeds.")),
      card("Cluster map", el("p", { class: "muted", id: "map-caption" },
        selectDone ? "Loading…" : "The map appears when the select stage finishes."), chart("cluster-map")),
      card("Score histograms", el("p", { class: "muted", id: "hist-caption" }, selectDone ? ""
        : "The histograms appear when the select stage finishes."), el("div", { class: "histograms", id: "histograms" })));
    if (res.clusters) drawClusterBars("cluster-bars", res.clusters);
    if (rnd.job_id && !TERMINAL.has(rnd.status)) {
      every(POLL_MS, async () => {
        const job = await api(`/v1/jobs/${rnd.job_id}`);
        if (my !== renderId) return;
        progress.replaceChildren(progressBlock(job));
        if (TERMINAL.has(job.status)) route();
      });
    }
    if (selectDone) {  // the map may be missing (a round from before the dashboard): the rest of the page stays
      let map, hist;
      try {
        [map, hist] = await Promise.all([api(`/v1/rounds/${roundId}/map`), api(`/v1/rounds/${roundId}/score-histograms`)]);
      } catch (err) {
        if (my !== renderId) return;
        document.getElementById("map-caption").textContent = `No map: ${err.message}.`;
        document.getElementById("hist-caption").textContent = "No histograms: see the map.";
        return;
      }
      if (my !== renderId) return;
      drawMap(map, res.clusters || []);
      drawHistograms(hist.histograms, res.clusters || []);
    }
  }

  function drawMap(map, clusters) {
    const p = map.points;
    const n = p.x.length;
    document.getElementById("map-caption").textContent = `${n} of ${map.candidates} candidates, `
      + "the first two principal components of their projected gradient features; rings: selected, crosses: pruned.";
    const pick = (want) => [...Array(n).keys()].filter(want);
    // SVG draws a few thousand points crisply; beyond that WebGL, where the browser has it
    const type = n > 2000 && document.createElement("canvas").getContext("webgl") ? "scattergl" : "scatter";
    const trace = (idx, extra) => ({ type, mode: "markers", x: idx.map((i) => p.x[i]), y: idx.map((i) => p.y[i]),
      text: idx.map((i) => `sample ${p.sample_id[i]} · cluster ${p.cluster[i]}`), hoverinfo: "text", ...extra });
    const ids = clusters.length ? clusters.map((c) => c.id) : [...new Set(p.cluster)].sort((a, b) => a - b);
    const traces = ids.map((c) => trace(pick((i) => p.cluster[i] === c),
      { name: `cluster ${c}`, marker: { color: color(c), size: 6, opacity: 0.7 } }));
    const sel = pick((i) => p.selected[i]);
    const pruned = pick((i) => p.pruned[i]);
    traces.push(trace(sel, { name: "selected", marker: { symbol: "circle-open", size: 11, color: "#111", line: { width: 1.5 } } }));
    traces.push(trace(pruned, { name: "pruned", marker: { symbol: "x-thin-open", size: 10, color: "#b91c1c", line: { width: 2 } } }));
    Plotly.newPlot("cluster-map", traces, { margin: { t: 30, r: 10, b: 40, l: 40 }, height: 460,
      xaxis: { title: { text: "PC 1" }, zeroline: false }, yaxis: { title: { text: "PC 2" }, zeroline: false } }, PLOT_CONFIG);
  }

  function drawHistograms(histograms, clusters) {
    const box = document.getElementById("histograms");
    document.getElementById("hist-caption").textContent = histograms.length
      ? "Each cluster's scores under its expert: all candidates, and the ones selected (coverage-centric sampling spreads them over the range)."
      : "No cluster has an expert in this round's method.";
    const budget = Object.fromEntries(clusters.map((c) => [c.id, c.budget]));
    for (const h of histograms) {
      const id = `hist-${h.cluster}`;
      box.append(chart(id, true));
      const mids = h.counts.map((_, i) => (h.edges[i] + h.edges[i + 1]) / 2);
      const width = h.edges.length > 1 ? h.edges[1] - h.edges[0] : 1;
      Plotly.newPlot(id, [
        { type: "bar", name: "all", x: mids, y: h.counts, width, marker: { color: color(h.cluster), opacity: 0.45 } },
        { type: "bar", name: "selected", x: mids, y: h.selected, width, marker: { color: color(h.cluster) } }],
      { barmode: "overlay", margin: { t: 36, r: 10, b: 40, l: 40 }, showlegend: false,
        title: { text: `cluster ${h.cluster} · ${h.expert} · budget ${fmt(budget[h.cluster])}`, font: { size: 13 } },
        xaxis: { title: { text: h.log_scale ? `log ${h.expert}` : h.expert } } }, SMALL_PLOT);
    }
  }

  // ---- routing -------------------------------------------------------------------------------

  async function route() {
    timers.forEach(clearInterval);
    timers = [];
    const my = ++renderId;
    delete view.dataset.loaded;
    const hasKey = Boolean(sessionStorage.getItem(KEY));
    document.getElementById("key-forget").hidden = !hasKey;
    if (!hasKey) {
      setCrumbs();
      view.replaceChildren(card(null, el("p", {}, "Enter an API key above to see your pools. "
        + "An operator creates one with `adaptinf keys create --name <owner>`; it is kept in this tab only.")));
      return;
    }
    const [, kind, id] = (location.hash.replace(/^#/, "") || "/").split("/");
    try {
      // an id is one path segment of the API's URLs, whatever the fragment holds
      const safeId = id && encodeURIComponent(decodeURIComponent(id));
      if (kind === "pools" && id) await poolView(my, safeId);
      else if (kind === "rounds" && id) await roundView(my, safeId);
      else await poolsView(my);
      if (my === renderId) view.dataset.loaded = kind === "pools" && id ? "pool" : kind === "rounds" && id ? "round" : "pools";
    } catch (err) {
      if (my !== renderId) return;
      const hint = err.status === 401 ? " Check the API key (Forget key, then enter another)." : "";
      view.replaceChildren(card(null, el("p", { class: "error" }, `${err.status ? `HTTP ${err.status}: ` : ""}${err.message}.${hint}`)));
      view.dataset.loaded = "error";
    }
  }

  document.getElementById("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("key-input");
    if (input.value.trim()) sessionStorage.setItem(KEY, input.value.trim());
    input.value = "";
    route();
  });
  document.getElementById("key-forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); route(); });
  window.addEventListener("hashchange", route);
  route();
})();
