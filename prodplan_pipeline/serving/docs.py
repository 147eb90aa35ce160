"""The interactive API docs at /docs, working without internet access: Swagger UI's script,
stylesheet and icon are served by the API itself, from the swagger-ui-bundle-v2 package, instead
of FastAPI's default CDN (without which /docs is a blank page). There is no /redoc: its files
come in no package of their own (fastapi-offline has a copy among its internals), and a page
loading them from a CDN would be blank offline the same way.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from swagger_ui_bundle import swagger_ui_path

from prodplan_pipeline.serving import problems

ASSETS_URL = "/docs/assets"
# Only what the page loads, by name: the package also holds upstream's demo page (it loads a
# remote example spec), other bundles and source maps.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
SWAGGER_UI = Path(str(swagger_ui_path))
# validatorUrl null: Swagger UI would otherwise send the spec to validator.swagger.io.
SWAGGER_PARAMETERS = {"validatorUrl": None}


def add_docs_routes(app: FastAPI) -> None:
    """/docs and its assets; the app is created with docs_url=None and redoc_url=None."""

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")  # behind a proxy that mounts the API elsewhere
        return get_swagger_ui_html(
            openapi_url=root + app.openapi_url,
            title=f"{app.title}: interactive docs",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon-32x32.png",
            swagger_ui_parameters=SWAGGER_PARAMETERS,
        )

    @app.get(ASSETS_URL + "/{name}", include_in_schema=False)
    async def docs_asset(name: str):
        if name not in ASSETS:
            return problems.response(404, f"no docs asset {name!r}")
        return FileResponse(SWAGGER_UI / name, media_type=ASSETS[name])
