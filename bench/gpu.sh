#!/usr/bin/env bash
# The GPU path, measured: one short script, JSON lines on stdout (progress on stderr).
#   1. features on a LLaVA-shaped 1.3B model (llava-1b-shape: random weights, built from a config)
#      in bfloat16 and float32: ours, the batch-size-1 reference and the no-grad floor (LoRA r=8 on
#      q/v, where the reference's dense matrix fits); in bf16 also the default adapter (r=64 on all
#      seven linear modules, a 2.3M-dimensional gradient) and its bf16-vs-fp32 feature cosine;
#   2. the projection at 0.65M and 5M gradient dimensions on the GPU;
#   3. FAISS k-means and search on the GPU at 1M x 1,024.
# Targets: speedup over the reference >= 10x, floor_ratio <= 1.3, bf16-vs-fp32 min cosine >= 0.99.
# Usage: bash bench/gpu.sh   (from the repository root, with the virtualenv of `make install`;
#        FAISS on the GPU needs a faiss-gpu build in that environment, else step 3 says so)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
  || { echo '{"gpu": false, "reason": "torch sees no CUDA device"}'; exit 1; }
"$PY" -c 'import torch, json; p = torch.cuda.get_device_properties(0); print(json.dumps({"gpu": p.name, "memory_gb": round(p.total_memory / 2**30, 1), "torch": torch.__version__, "cuda": torch.version.cuda}))'
rc=0
echo "features, bfloat16" >&2
"$PY" bench/features.py --model llava-1b-shape --device cuda --dtype bfloat16 --compare-dtype float32 \
  --samples 32 --batch-size 16 --repeats 2 || rc=1
echo "features, float32" >&2
"$PY" bench/features.py --model llava-1b-shape --device cuda --dtype float32 \
  --samples 32 --batch-size 16 --repeats 2 --skip-all-linear || rc=1
echo "projection on the GPU" >&2
"$PY" bench/projection.py --device cuda --dense-budget-gb 60 || rc=1
echo "faiss on the GPU" >&2
"$PY" bench/faiss_gpu.py || rc=1
exit $rc
