"""The decision half of a round: clusters, expert per cluster, budgets, CCS, methods."""
from core.budget import resolve_budget
from workers.engine.selection.budget import allocate_budget
from workers.engine.selection.ccs import STRATUM_LOW_TAIL, STRATUM_UNSCORED, ccs_sample, stratify
from workers.engine.selection.clustering import Clustering, choose_n_clusters, cluster_features
from workers.engine.selection.config import EXPERT_ORDER, SelectionConfig, parse_method
from workers.engine.selection.experts import choose_expert, score_entropy
from workers.engine.selection.methods import ClusterStats, Provenance, SelectionResult, select_samples

__all__ = [
    "EXPERT_ORDER", "STRATUM_LOW_TAIL", "STRATUM_UNSCORED", "ClusterStats", "Clustering", "Provenance",
    "SelectionConfig", "SelectionResult", "allocate_budget", "ccs_sample", "choose_expert", "choose_n_clusters",
    "cluster_features", "parse_method", "resolve_budget", "score_entropy", "select_samples", "stratify",
]
