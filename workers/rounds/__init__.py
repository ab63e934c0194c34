"""A pool's round (DESIGN §2, rounds contract §3): stages run as child jobs chained by `advance`.

prepare → [warmup] → features (one job per shard) → select → [train] → finalize. Only
finalize changes the pool; every other stage writes round-scoped rows or blobs.
"""
