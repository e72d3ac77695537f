"""The dashboard: one page at ``GET /`` and ``GET /dashboard``, its files under ``/static``.

Plain HTML, CSS and JavaScript from ``gateway/static`` (no build step). The page is live through
``WS /ws`` and shows one job's events through ``GET /jobs/{id}/events`` (SSE). The model-type
menu is filled here from the catalogue, so it lists exactly what the API accepts (types the
gateway learns from workers' announcements too: the page is made again when the catalogue
changes).
"""

from __future__ import annotations

import html
from functools import cache, lru_cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from gateway.errors import ApiError
from schemas.catalogue import ROUTES, STATE

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
_MEDIA_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}
_MODEL_TYPES_MARK = "<!-- model types -->"
_DEFAULT_MODEL_TYPE = "sleep"  # the quickest demo: progress in steps, no data needed
# Revalidate on every load (ETag / Last-Modified make that cheap): an upgrade shows at once.
_NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


def _model_type_options() -> str:
    """``<optgroup label="sklearn"><option>random_forest</option>…`` by worker type."""
    by_type: dict[str, list[str]] = {}
    for model_type, (worker_type, _gpu) in ROUTES.items():
        by_type.setdefault(worker_type, []).append(model_type)
    groups = []
    for worker_type in sorted(by_type, key=lambda t: (t != "diagnostic", t)):
        options = "".join(
            f"<option{' selected' if m == _DEFAULT_MODEL_TYPE else ''}>{html.escape(m)}</option>"
            for m in sorted(by_type[worker_type]))
        groups.append(f'<optgroup label="{html.escape(worker_type)}">{options}</optgroup>')
    return "".join(groups)


@lru_cache(maxsize=4)
def _page(version: int) -> str:
    """The page for ``version`` of the catalogue."""
    text = (STATIC_DIR / "dashboard.html").read_text(encoding="utf-8")
    return text.replace(_MODEL_TYPES_MARK, _model_type_options())


@router.get("/", response_class=HTMLResponse)
@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard() -> HTMLResponse:
    """The dashboard page."""
    return HTMLResponse(_page(STATE.version), headers=_NO_CACHE)


@cache
def _static_files() -> dict[str, Path]:
    return {p.name: p for p in STATIC_DIR.iterdir()
            if p.is_file() and p.suffix in _MEDIA_TYPES}


@router.get("/static/{name}")
async def static_file(name: str) -> FileResponse:
    """A file of gateway/static by its bare name (nothing else is reachable)."""
    path = _static_files().get(name)
    if path is None:
        raise ApiError(404, "not_found", f"no static file {name[:80]!r}")
    return FileResponse(path, media_type=_MEDIA_TYPES[path.suffix], headers=_NO_CACHE)
