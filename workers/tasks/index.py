"""Index tasks: ``adaptinf.index.rebuild`` (queue select), a thin wrapper over the rebuild."""
from __future__ import annotations

from typing import Any

from service.pool_index import REBUILD_KIND, REBUILD_QUEUE
from workers.celery_app import app
from workers.jobs import JobContext, job_task
from workers.rounds.index_rebuild import rebuild_index_version


@job_task(app, kind=REBUILD_KIND, queue=REBUILD_QUEUE)
def rebuild_index(ctx: JobContext) -> dict[str, Any]:
    """Check a pool's index version and rebuild it from its round's feature shards when damaged."""
    ctx.stage("rebuild")
    settings = ctx.settings
    return rebuild_index_version(ctx.session_factory, settings.blob_store(), settings.work_dir,
                                 ctx.params["index_version_id"], fence=ctx.fence)
