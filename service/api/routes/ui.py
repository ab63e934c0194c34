"""The web dashboard at /ui: static files only. The page asks for an API key and sends it as a
Bearer header with every data request, so the data stays behind the same keys as the API."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).resolve().parents[2] / "ui"
router = APIRouter(include_in_schema=False)


def plotly_js() -> Path:
    """plotly.js as shipped inside PyPI's `plotly` package: served from here, never from a CDN
    (the service runs on private networks). Found without importing plotly."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the dashboard needs the `plotly` package for its charts: pip install plotly")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


@router.get("/ui")
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/ui/")
def ui_index() -> FileResponse:
    return FileResponse(UI_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/ui/vendor/plotly.min.js")
def ui_plotly() -> FileResponse:
    return FileResponse(plotly_js(), media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})


def install_ui(app: FastAPI) -> None:
    """Add the dashboard's page, its scripts and styles, and the local plotly.js."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=UI_DIR / "static"), name="ui-static")
