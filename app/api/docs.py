"""``/docs`` without the internet: Swagger UI served from the packaged ``swagger_ui_bundle``.

FastAPI's default page loads Swagger UI's JavaScript and CSS from a public CDN, so in an
air-gapped cluster it renders blank. Here the page references only this service: the assets
come from the pinned ``swagger-ui-bundle`` package (Swagger UI 4.15.5) mounted under
``/docs/assets``, the favicon too, and the online validator badge is off.

Swagger UI 4 renders OpenAPI 3.0 only, and FastAPI writes 3.1; so the page loads
``/docs/openapi-3.0.json``, the same document written in 3.0 terms (``nullable`` instead of a
``null`` type, boolean exclusive bounds, one ``example`` per schema). ``/openapi.json`` stays
the 3.1 original.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

PREFIX = "/docs"
ASSETS = PREFIX + "/assets"
OPENAPI_30 = PREFIX + "/openapi-3.0.json"


def install(app: FastAPI) -> None:
    """Add the Swagger UI page, its assets and the 3.0 rendition of the OpenAPI document."""
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="swagger_ui_assets")
    rendition: dict[str, Any] = {}

    @app.get(PREFIX, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + OPENAPI_30,
            title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon-32x32.png",
            # The default validator badge would call an online validator.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(OPENAPI_30, include_in_schema=False)
    async def openapi_30() -> JSONResponse:
        if not rendition:
            rendition.update(as_openapi_30(app.openapi()))
        return JSONResponse(rendition)


def as_openapi_30(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI 3.1 ``document`` (as FastAPI and pydantic write it) in OpenAPI 3.0.3."""
    converted = copy.deepcopy(document)
    converted["openapi"] = "3.0.3"
    for schema in converted.get("components", {}).get("schemas", {}).values():
        _schema(schema)
    for path_item in converted.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict):
                _operation(operation)
    return converted


def _operation(operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        _schema(parameter.get("schema"))
    body = operation.get("requestBody") or {}
    for media in body.get("content", {}).values():
        _schema(media.get("schema"))
    for response in operation.get("responses", {}).values():
        for media in response.get("content", {}).values():
            _schema(media.get("schema"))
        for header in response.get("headers", {}).values():
            _schema(header.get("schema"))


_NULL = {"type": "null"}


def _schema(schema: Any) -> None:
    """Rewrite one JSON Schema (2020-12 flavour) in place into OpenAPI 3.0's dialect."""
    if not isinstance(schema, dict):
        return
    for key in ("properties", "patternProperties"):
        for child in schema.get(key, {}).values():
            _schema(child)
    for key in ("items", "additionalProperties", "not"):
        _schema(schema.get(key))
    for key in ("allOf", "anyOf", "oneOf"):
        for child in schema.get(key, []):
            _schema(child)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if not options or _NULL not in options:
            continue
        rest = [option for option in options if option != _NULL]
        del schema[key]
        schema["nullable"] = True
        if len(rest) == 1:
            merged = {**rest[0], **schema}
            schema.clear()
            schema.update(merged)
        elif rest:
            schema[key] = rest
    kinds = schema.get("type")
    if isinstance(kinds, list):
        if "null" in kinds:
            schema["nullable"] = True
        kinds = [kind for kind in kinds if kind != "null"]
        if len(kinds) == 1:
            schema["type"] = kinds[0]
        else:
            del schema["type"]
    if "const" in schema:
        schema["enum"] = [schema.pop("const")]
    for bound, key in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        value = schema.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            schema[bound] = value
            schema[key] = True
    examples = schema.get("examples")
    if isinstance(examples, list):
        del schema["examples"]
        if examples:
            schema.setdefault("example", examples[0])
    if "$ref" in schema and len(schema) > 1:  # 3.0 ignores siblings of $ref
        schema["allOf"] = [{"$ref": schema.pop("$ref")}]
