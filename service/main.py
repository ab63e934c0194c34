"""The FastAPI app factory (`uvicorn --factory service.main:create_app`). No torch import here."""
from __future__ import annotations

import logging
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from service.api.body_timeout import install_body_timeout
from service.api.errors import install_error_handlers
from service.api.openapi import install_openapi
from service.api.redoc import install_redoc
from service.api.text_guard import TextGuard
from service.api.metrics import Metrics, MetricsMiddleware
from service.api.routes import checkpoints, datasets, health, jobs, pools, round_views, rounds
from service.api.routes.ui import install_ui
from service.config import Settings, get_settings
from service.db.session import get_engine, get_sessionmaker
from service.storage import BlobStore

log = logging.getLogger(__name__)
_STALE_UPLOAD_SECONDS = 24 * 3600  # older than any upload in flight, even with several API processes


def _remove_stale_uploads(settings: Settings) -> None:
    """Temp dirs of uploads cut off by a crash; live ones belong to requests and are younger."""
    uploads = settings.work_dir / "uploads"
    if not uploads.is_dir():
        return
    cutoff = time.time() - _STALE_UPLOAD_SECONDS
    for d in uploads.iterdir():
        try:
            if d.stat().st_mtime < cutoff:
                shutil.rmtree(d, ignore_errors=True)
        except FileNotFoundError:
            pass


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.resolved_database_url
        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_uploads(settings)
        app.state.settings = settings
        app.state.engine = get_engine(url)
        app.state.sessionmaker = get_sessionmaker(url)
        app.state.blobs = BlobStore(settings.blob_dir)
        app.state.metrics = metrics
        metrics.watch(app.state.sessionmaker, settings)
        yield
        metrics.process_ended()
        app.state.engine.dispose()

    # /docs and /redoc load Swagger UI and ReDoc from the package's own copies (no CDN, no fonts),
    # so they render on a network with no way out; validatorUrl None: no badge fetched from swagger.io.
    app = FastAPIOffline(
        title="Adapt-∞ data-selection service",
        version="0.1.0",
        lifespan=lifespan,
        description="Lifelong multimodal instruction tuning with dynamic data selection (Adapt-∞).",
        swagger_ui_parameters={"validatorUrl": None},
        redoc_url=None,  # install_redoc: the same page, with ReDoc's one CDN URL made local
    )
    install_redoc(app)
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(TextGuard)
    install_body_timeout(app, settings.body_read_timeout_seconds)  # around every reader of the body
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: it counts the 408s too
    app.include_router(health.router)
    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(pools.router)
    app.include_router(rounds.router)
    app.include_router(round_views.router)
    app.include_router(checkpoints.router)
    install_ui(app)
    return app
