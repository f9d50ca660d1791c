"""Application factory: ``uvicorn --factory app.main:create_app`` or ``ml-api serve``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api import (
    admin,
    deployment,
    docs,
    experiments,
    feedback,
    health,
    predict,
    retraining,
    v2,
)
from app.api.middleware import (
    BodySizeLimitMiddleware,
    DirectRoutesMiddleware,
    RequestMetricsMiddleware,
)
from app.container import Container
from app.errors import InvalidInput, ServiceError, Unauthorized
from app.metrics import ServiceMetrics
from app.settings import Settings

logger = logging.getLogger("app")

TRAFFIC = (
    "/predict",
    "/get_experiment_metas",
    "/replace_ml_model",
    "/deployment",
    "/deployment/promote",
    "/deployment/rollback",
    "/deployment/report",
    "/feedback",
    "/alerts/webhook",
    "/retraining/decisions",
    *v2.ROUTE_TEMPLATES,  # labelled by template: /v2/models/{name}/versions/{version}/infer
)
NOT_TRAFFIC = ("/metrics", "/v2/health/live", "/v2/health/ready", "/docs", "/openapi.json")
NOT_TRAFFIC_PREFIXES = (docs.PREFIX + "/",)
VERSION = "0.1.0"
DESCRIPTION = """Real-time classification with hot model swap.

* `POST /predict` takes rows as JSON or a CSV upload and answers with the label and class
  probabilities of each row, naming the experiment that served them.
* `GET /get_experiment_metas` lists the published experiments with their roles.
* `POST /replace_ml_model` (bearer token) swaps the primary model without downtime.
* `GET/PUT /deployment`, `POST /deployment/promote`, `POST /deployment/rollback` (bearer
  token): live experiments — weighted candidates (canary, A/B) and shadows.
* `/v2/...`: the Open Inference Protocol (KServe/MLServer/Triton "v2" REST): server and model
  metadata, readiness, inference with the pandas codec or one numeric tensor, and the model
  repository extension (index; load = hot swap).
"""


def create_app(settings: Settings | None = None, container: Container | None = None) -> FastAPI:
    settings = settings or Settings()
    container = container or Container(settings=settings)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s %(message)s"
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lifecycle = container.lifecycle()
        await lifecycle.start()
        try:
            yield
        finally:
            await lifecycle.stop()

    app = FastAPI(
        title="ml-api",
        version=VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        # /docs serves Swagger UI from the packaged copy (app/api/docs.py), never a CDN;
        # ReDoc has no packaged copy, so it is off.
        docs_url=None,
        redoc_url=None,
        # Metrics are Prometheus (app/metrics.py); FastAPI's OpenTelemetry hooks would only add
        # per-request work.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.container = container
    app.router.routes.append(predict.route)
    oip = v2.OipEndpoints(settings.oip_model_name, VERSION)
    oip_routes = oip.routes
    app.router.routes.extend(oip_routes)
    for module in (experiments, admin, deployment, feedback, retraining, health):
        app.include_router(module.router)
    docs.install(app)
    _document(app, settings.oip_model_name)
    metrics = container.metrics()
    _install_error_handlers(app, metrics)

    # Each middleware added wraps those added before it: this one is the innermost.
    infer = next(route for route in oip_routes if route.name == v2.INFER_ROUTE)
    app.add_middleware(
        DirectRoutesMiddleware,
        routes=[(predict.route, {})],
        handlers=app.exception_handlers,
        raw=[(infer, {"name": settings.oip_model_name}, oip.infer_direct)],
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(
        BodySizeLimitMiddleware, max_bytes=settings.max_upload_bytes, metrics=metrics
    )
    app.add_middleware(
        RequestMetricsMiddleware,
        metrics=metrics,
        counted_paths=TRAFFIC,
        excluded_paths=NOT_TRAFFIC,
        counted_templates=v2.ROUTE_TEMPLATES,
        excluded_prefixes=NOT_TRAFFIC_PREFIXES,
    )
    return app


def _document(app: FastAPI, oip_model_name: str) -> None:
    """OpenAPI from the FastAPI routes, plus the plain routes' operations (/predict, /v2)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            predict.document(schema)
            v2.document(schema, oip_model_name)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _error(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _install_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        if isinstance(exc, InvalidInput):
            metrics.request_invalid(exc.reason)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        if exc.status_code >= 500:
            logger.warning("%s %s: %s", request.method, request.url.path, exc.message)
        return _error(exc.status_code, exc.code, exc.message, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        metrics.request_invalid("invalid_body")
        return _error(422, "invalid_request", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if request.url.path.startswith("/v2/"):  # no such OIP path or method: the OIP shape
            return JSONResponse(
                {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
            )
        return _error(exc.status_code, "http_error", str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Internals stay in the log; the client learns only that it was our fault.
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", "internal server error")
