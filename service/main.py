"""The FastAPI app factory (`uvicorn --factory service.main:create_app`). No torch import here."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from service.api.access import KeyGate, keyed_paths
from service.api.body_timeout import install_body_timeout
from service.api.errors import install_error_handlers
from service.api.openapi import install_openapi
from service.api.redoc import install_redoc
from service.api.text_guard import TextGuard
from service.api.metrics import Metrics, MetricsMiddleware
from service.api.routes import checkpoints, datasets, health, jobs, pool_index, pools, round_views, rounds
from service.api.routes.ui import install_ui
from service.config import Settings, get_settings
from service.db.session import get_engine, get_sessionmaker
from service.upload_sweep import remove_stale_uploads, sweep_uploads_forever


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = settings.resolved_database_url
        if settings.database_url is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_uploads(settings)
        app.state.settings = settings
        app.state.engine = get_engine(url)
        app.state.sessionmaker = get_sessionmaker(url)
        app.state.blobs = settings.blob_store()
        app.state.metrics = metrics
        metrics.watch(app.state.sessionmaker, settings)
        sweeper = asyncio.create_task(sweep_uploads_forever(settings), name="upload-sweep")
        yield
        sweeper.cancel()
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
    if paths := keyed_paths(settings):
        app.add_middleware(KeyGate, paths=paths)
    app.add_middleware(TextGuard)
    install_body_timeout(app, settings.body_read_timeout_seconds)  # around every reader of the body
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: it counts the 408s too
    app.include_router(health.router)
    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(pools.router)
    app.include_router(pool_index.router)
    app.include_router(rounds.router)
    app.include_router(round_views.router)
    app.include_router(checkpoints.router)
    install_ui(app)
    return app
