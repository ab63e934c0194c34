"""What a pool does with the datasets a request gives it: refusals and warnings. No web framework here.

Refused (422, `InvalidReference` naming the field): a dataset in both roles within one pool. An
evaluation set trained on measures what the model memorised, not what it kept, so every metric
of the pool would be wrong from then on; there is no use for it, and a separate split is the fix.

Warned, as `{"code", "message"}` dicts the API returns in the creating response's `warnings`
(the request is well defined and may be meant, but is often a slip):
- `images_dropped`: a dataset with images in a causal-lm pool; the model reads text only, so its
  images and their `<image>` tokens are dropped.
- `dataset_already_in_pool`: a round names a dataset whose samples are already members; they are
  not added again (pruned ones stay pruned), so the dataset brings the round nothing new.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.statuses import UNFINISHED
from service.db.models import Dataset, Pool, PoolEvalSet, PoolMember, Round, Sample
from service.domain_errors import InvalidReference

PoolWarning = dict[str, Any]


def training_dataset_ids(session: Session, pool_id: str) -> set[str]:
    """Datasets the pool trains on: those with members (active or pruned), and those its unfinished round names."""
    with_members = session.scalars(
        select(Sample.dataset_id).join(PoolMember, PoolMember.sample_id == Sample.id)
        .where(PoolMember.pool_id == pool_id).distinct()
    )
    named = session.scalars(select(Round.params).where(Round.pool_id == pool_id, Round.status.in_(UNFINISHED)))
    return set(with_members) | {d for params in named for d in (params or {}).get("dataset_ids", ())}


def _images_dropped(pool: Pool, dataset: Dataset) -> PoolWarning | None:
    if pool.model_type != "causal-lm" or not dataset.num_images:
        return None
    return {"code": "images_dropped",
            "message": f"dataset {dataset.id} has {dataset.num_images} image(s); pool {pool.id} is causal-lm, which "
                       "reads text only: its images and their <image> tokens are dropped (use a llava pool to train "
                       "on them)"}


def _owned(session: Session, pool: Pool, dataset_ids: Sequence[str]) -> dict[str, Dataset]:
    rows = session.scalars(select(Dataset).where(Dataset.id.in_(list(dataset_ids)), Dataset.owner_id == pool.owner_id))
    return {d.id: d for d in rows}


def check_round_datasets(session: Session, pool: Pool, dataset_ids: Sequence[str]) -> list[PoolWarning]:
    """Refuse an evaluation set as training data; the warnings of a round over `dataset_ids`.

    Call before the round is added (an unfinished round counts as training on what it names).
    Unknown ids are left to `create_round`, which names them.
    """
    datasets = _owned(session, pool, dataset_ids)
    eval_sets = dict(session.execute(
        select(PoolEvalSet.dataset_id, PoolEvalSet.skill).where(PoolEvalSet.pool_id == pool.id)
    ).all())
    for i, dataset_id in enumerate(dataset_ids):
        if dataset_id in datasets and dataset_id in eval_sets:
            field = f"body.dataset_ids[{i}]"
            raise InvalidReference(
                f"{field}: dataset {dataset_id!r} is an evaluation set of pool {pool.id} (skill "
                f"{eval_sets[dataset_id]!r}); trained on, it would measure memory, not retention. Train on a "
                f"separate split, or stop evaluating on it first (DELETE /v1/pools/{pool.id}/eval-sets/{dataset_id})",
                code="eval_set_as_training_data", field=field,
            )
    members = dict(session.execute(
        select(Sample.dataset_id, func.count()).join(PoolMember, PoolMember.sample_id == Sample.id)
        .where(PoolMember.pool_id == pool.id, Sample.dataset_id.in_(list(datasets))).group_by(Sample.dataset_id)
    ).all())
    warnings = []
    for dataset_id in dataset_ids:
        if dataset_id not in datasets:
            continue
        if dataset_id in members:
            warnings.append({
                "code": "dataset_already_in_pool",
                "message": f"dataset {dataset_id} is already in pool {pool.id} ({members[dataset_id]} member(s)): its "
                           "samples are not added again and pruned ones stay pruned, so it brings this round nothing new",
            })
        if (w := _images_dropped(pool, datasets[dataset_id])) is not None:
            warnings.append(w)
    return warnings


def check_eval_set(session: Session, pool: Pool, dataset_id: str, field: str) -> list[PoolWarning]:
    """Refuse the pool's training data as an evaluation set; the warnings of adding it."""
    if dataset_id in training_dataset_ids(session, pool.id):
        raise InvalidReference(
            f"{field}: dataset {dataset_id!r} is training data of pool {pool.id}; scored on it, the pool would "
            f"measure memory, not retention. Upload a held-out split, or take the dataset out of the pool first "
            f"(DELETE /v1/pools/{pool.id}/datasets/{dataset_id})",
            code="training_data_as_eval_set", field=field,
        )
    dataset = _owned(session, pool, [dataset_id]).get(dataset_id)
    return [w] if dataset is not None and (w := _images_dropped(pool, dataset)) is not None else []
