"""The lifelong benchmark's plot: each skill's accuracy over rounds, one panel per method."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def plot_trajectories(acc: dict[str, np.ndarray], skills: list[str], arrival: list[int], path: Path,
                      title: str) -> Path:
    """Write a PNG: per method, the mean over seeds of each skill's accuracy after each round.

    Args:
        acc: method → float[seeds, rounds, skills] accuracy (NaN where not evaluated).
        skills: the column names; arrival: each skill's arrival round (dashed before it).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    methods = list(acc)
    cols = min(3, len(methods))
    rows = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), sharey=True, squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, method in zip(axes.flat, methods):
        mean = np.nanmean(acc[method], axis=0)  # [rounds, skills]
        rounds = np.arange(1, mean.shape[0] + 1)
        for j, skill in enumerate(skills):
            r = arrival[j]
            c = colours(j % 10)
            if r > 0:  # before the skill's data arrived
                ax.plot(rounds[: r + 1], mean[: r + 1, j], color=c, linestyle=":", linewidth=1)
            ax.plot(rounds[r:], mean[r:, j], color=c, marker="o", markersize=3, label=skill)
        ax.set_title(f"{method} (n={acc[method].shape[0]} seeds)", fontsize=10)
        ax.set_xticks(rounds)
        ax.set_xlabel("after round")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (mean over seeds)")
    for ax in list(axes.flat)[len(methods):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title + "  (dotted: before the skill's data arrived)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
