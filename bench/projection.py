"""Projection benchmark: the sparse JL projection against the dense TRAK-style one. One JSON line.

Gradient dimensions (proj_dim 8192, LoRA r = 64 on all seven linear modules of one decoder layer):
  0.65M = 651,264: SmolLM2-135M (hidden 576, MLP 1536, 3 KV heads);
  5M    = 4,997,120: LLaMA-7B (hidden 4096, MLP 11008).
For each, in a fresh process: throughput projecting a batch of 8 gradients (best of `--repeats`)
and the extra peak RSS it takes beyond the gradients themselves (the kernel's high-water mark,
reset just before the call). The dense baseline materialises its float32 matrix, as TRAK's
BasicProjector and LESS do; it is run wherever that matrix fits in `--dense-budget-gb`, and
reported as not fitting (with its size) elsewhere.

Quality, at a shape where the dense matrix fits (65,536 dimensions, 64 gradient-like vectors:
a shared direction plus noise, pairwise cosine ≈ 0.2):
  max_cosine_error:     ours against the exact dense product with the same matrix materialised
                        (the streamed, blocked implementation is the projection it claims to be);
  jl_cosine_error_*:    ours and the dense Rademacher projection, each against the exact
                        cosines of the unprojected vectors (what any JL projection distorts).
Feature pass: `projection_share_650k` is the projection's share of compute_features' time on the
`smollm2-135m-shape` preset (random weights, default adapter, features from the last layer) for
16 text samples of ~300 tokens.

On a GPU (bench/gpu.sh): --device cuda --dense-budget-gb 60 measures both on the device.

Usage: python bench/projection.py [--repeats 3] [--dense-budget-gb 8] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROJ_DIM = 8192
BATCH = 8
DIMS = {"650k": 651_264, "5m": 4_997_120}
QUALITY_DIM, QUALITY_N = 65_536, 64


def _rss_gb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def dense_rademacher(in_dim: int, proj_dim: int, seed: int):  # noqa: ANN201
    """The TRAK-style baseline: the whole ±1/√k float32 matrix, seeded, in memory."""
    import numpy as np
    import torch

    rng = np.random.Generator(np.random.PCG64(seed))
    signs = torch.from_numpy(rng.integers(0, 2, size=(in_dim, proj_dim), dtype=np.int8))
    return signs.float().mul_(2).sub_(1).mul_(proj_dim ** -0.5)


def measure(kind: str, in_dim: int, repeats: int) -> dict:
    """In a fresh process: seconds per batch of 8 and extra peak RSS (GB) of one projection."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    x = torch.randn(BATCH, in_dim, generator=torch.Generator().manual_seed(0))
    baseline = _rss_gb("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    if kind == "dense":
        matrix = dense_rademacher(in_dim, PROJ_DIM, 0)
        project = lambda v: v @ matrix  # noqa: E731
    else:
        from workers.engine.features.projection import SparseJLProjector

        project = SparseJLProjector(in_dim, PROJ_DIM, seed=0).project
    setup = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        project(x)
        best = min(best, time.perf_counter() - start)
    return {"samples_per_s": round(BATCH / best, 2), "seconds_per_batch": round(best, 4),
            "setup_s": round(setup, 2), "extra_rss_gb": round(_rss_gb("VmHWM") - baseline, 3)}


def measure_cuda(kind: str, in_dim: int, repeats: int) -> dict:
    """On the GPU: seconds per batch of 8 and the extra peak device memory (GB) of one projection."""
    import torch

    x = torch.randn(BATCH, in_dim, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    if kind == "dense":
        matrix = dense_rademacher(in_dim, PROJ_DIM, 0).cuda()
        project = lambda v: v @ matrix  # noqa: E731
    else:
        from workers.engine.features.projection import SparseJLProjector

        project = SparseJLProjector(in_dim, PROJ_DIM, seed=0, device="cuda").project
    project(x)  # warm-up (kernels, allocator)
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        project(x)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return {"samples_per_s": round(BATCH / best, 2), "seconds_per_batch": round(best, 4),
            "extra_gpu_gb": round((torch.cuda.max_memory_allocated() - before) / 1e9, 3)}


def quality() -> dict:
    import torch

    from workers.engine.features.projection import SparseJLProjector

    g = torch.Generator().manual_seed(1)
    x = 0.5 * torch.randn(1, QUALITY_DIM, generator=g) + torch.randn(QUALITY_N, QUALITY_DIM, generator=g)
    ours = SparseJLProjector(QUALITY_DIM, PROJ_DIM, seed=0)
    y = ours.project(x)
    same_matrix = x @ ours.dense_matrix()
    dense = x @ dense_rademacher(QUALITY_DIM, PROJ_DIM, 0)

    def cosines(v: torch.Tensor) -> torch.Tensor:
        v = v / v.norm(dim=1, keepdim=True)
        c = v @ v.T
        return c[torch.triu_indices(len(v), len(v), 1).unbind()]

    exact = cosines(x)
    ours_err, dense_err = (cosines(y) - exact).abs(), (cosines(dense) - exact).abs()
    return {
        "max_cosine_error": float((cosines(y) - cosines(same_matrix)).abs().max()),
        "jl_cosine_error_ours": {"mean": round(float(ours_err.mean()), 5), "max": round(float(ours_err.max()), 5)},
        "jl_cosine_error_dense": {"mean": round(float(dense_err.mean()), 5), "max": round(float(dense_err.max()), 5)},
        "quality_dim": QUALITY_DIM, "quality_pairs": int(exact.numel()), "mean_exact_cosine": round(float(exact.mean()), 3),
    }


def feature_share(samples: int) -> dict:
    """The projection's share of a feature pass at 0.65M gradient dimensions."""
    import numpy as np
    import torch

    from workers.engine.features import FeatureConfig, FeatureEngine
    from workers.engine.models import ModelSpec, encode_sample, load_model
    from core.samples import EngineSample, Message

    torch.set_num_threads(os.cpu_count() or 1)
    loaded = load_model(ModelSpec("smollm2-135m-shape", model_type="causal-lm", device="cpu", dtype="float32"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a warmed-up adapter: non-zero B, as after the first round
        for name, p in loaded.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    rng = np.random.default_rng(0)
    words = "the a of to and in is for on with as by at from that this it be are was or an".split()
    # ~300 tokens each (the preset's tokenizer is byte-level: ~3.5 tokens per word here)
    data = [EngineSample(i, (Message("user", " ".join(rng.choice(words, 60))),
                             Message("assistant", " ".join(rng.choice(words, 25)))), ()) for i in range(samples)]
    engine = FeatureEngine(loaded, FeatureConfig(batch_size=BATCH))
    spent = [0.0]
    inner = engine.projector.project

    def timed_project(x):  # noqa: ANN001, ANN202
        start = time.perf_counter()
        out = inner(x)
        spent[0] += time.perf_counter() - start
        return out

    engine.projector.project = timed_project
    engine.run(data[:2])  # warm-up
    spent[0] = 0.0
    start = time.perf_counter()
    engine.run(data)
    total = time.perf_counter() - start
    return {"projection_share_650k": round(spent[0] / total, 4), "feature_pass_samples_per_s_650k": round(samples / total, 3),
            "grad_dim_650k_model": int(engine.capture.dim), "feature_pass_samples": samples,
            "feature_pass_mean_tokens": round(float(np.mean([len(encode_sample(loaded, s).input_ids) for s in data])), 1)}


def _in_child(fn, *args):  # noqa: ANN001, ANN202
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dense-budget-gb", type=float, default=8.0)
    ap.add_argument("--feature-samples", type=int, default=16)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: throughput and device memory only, dense wherever it fits --dense-budget-gb")
    args = ap.parse_args()
    if args.device == "cuda":
        result = {"device": "cuda", "proj_dim": PROJ_DIM, "batch": BATCH, "grad_dims": DIMS}
        for label, dim in DIMS.items():
            result[f"ours_{label}"] = _in_child(measure_cuda, "sjlt", dim, args.repeats)
            dense_gb = dim * PROJ_DIM * 4 / 1e9
            result[f"dense_{label}"] = (_in_child(measure_cuda, "dense", dim, args.repeats)
                                        if dense_gb <= args.dense_budget_gb else {"fits": False, "matrix_gb": round(dense_gb, 1)})
        print(json.dumps(result))
        return

    result: dict = {"proj_dim": PROJ_DIM, "batch": BATCH, "grad_dims": DIMS, "projection": "sjlt nnz=4"}
    for label, dim in {**DIMS, "65k": QUALITY_DIM}.items():
        result[f"ours_{label}"] = _in_child(measure, "sjlt", dim, args.repeats)
        dense_gb = dim * PROJ_DIM * 4 / 1e9
        fits = dense_gb <= args.dense_budget_gb
        result[f"dense_{label}"] = (_in_child(measure, "dense", dim, args.repeats) if fits
                                    else {"fits": False, "matrix_gb": round(dense_gb, 1)})
    result["extra_rss_gb_5m"] = result["ours_5m"]["extra_rss_gb"]
    result.update(_in_child(quality))
    result.update(_in_child(feature_share, args.feature_samples))
    result["cpu_count"] = os.cpu_count()
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
