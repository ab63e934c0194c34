"""The tables both lifelong benchmarks print: each method's metrics and the paired differences."""
from __future__ import annotations

from bench.lifelong_stats import excludes_zero


def _fmt(ci: dict) -> str:
    if ci["mean"] is None:
        return "-".center(22)
    lo, hi = ci["ci95"]
    return f"{ci['mean']:6.3f} [{lo:6.3f},{hi:6.3f}]" if lo is not None else f"{ci['mean']:6.3f}"


def print_tables(summary: dict) -> None:
    shown = ("avg_acc", "forgetting", "rare_acc", "relative_gain", "forward_transfer")
    print(f"\n{'method':<12}" + "".join(f"{k:>24}" for k in shown))
    for m, stats in summary["methods"].items():
        print(f"{m:<12}" + "".join(f"{_fmt(stats[k]):>24}" for k in shown))
    print("\npaired differences over seeds (adapt-inf minus the other), mean [95% CI]")
    for pair, stats in summary["paired"].items():
        marks = {k: ("*" if excludes_zero(stats[k]) else " ") for k in shown}
        print(f"{pair:<28}" + "".join(f"{_fmt(stats[k]) + marks[k]:>25}" for k in shown))
    pair, metric = summary["primary"]["pair"], summary["primary"]["metric"]
    print(f"(* : the interval excludes 0. The primary comparison, fixed before any run, is {metric} of {pair};"
          f" the other {len(summary['paired']) * len(shown) - 1} intervals shown are exploratory, with no"
          " correction for multiple comparisons)")
