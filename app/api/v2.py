"""The Open Inference Protocol (OIP, "v2") REST endpoints, next to our own API.

One model name (``ML_API_OIP_MODEL_NAME``) answers for the whole deployment and is routed like
``/predict`` (split by ``X-ML-API-Key`` or weights, shadows); each loaded experiment tag is a
version, so ``/versions/<tag>/infer`` pins one. The repository extension maps ``index`` onto
the published experiments and ``load`` onto a hot swap.

Plain Starlette routes, like ``/predict``: the container's services are read from
``app.state.container`` (test overrides apply), and every error is answered in the OIP shape
``{"error": "..."}`` with the protocol's status codes (400 for a bad request). Inference on the
deployment's model name, the hot path, is served by :meth:`OipEndpoints.infer_direct`, a plain
ASGI app with the same core and the same answers. The OpenAPI operations are declared by
:func:`document`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import orjson
from pydantic.json_schema import models_json_schema
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.api.asgi import headers_of, read_body, send_json
from app.api.predict import (
    KEY_HEADER,
    MAX_KEY_LENGTH,
    REQUEST_ID_HEADER,
    checked_key,
    checked_request_id,
    request_id_of,
    routing_key_of,
)
from app.codecs.json_rows import parse_json
from app.codecs.oip import encode_response, model_metadata, read_inference_request
from app.container import Container
from app.errors import InvalidInput, ModelNotLoaded, ServiceError, UnknownModel
from app.registry.meta import ExperimentSummary, validate_tag
from app.schemas import (
    OIP_EXAMPLE_PANDAS,
    OIP_EXAMPLE_RESPONSE,
    OIP_EXAMPLE_TENSOR,
    OipError,
    OipInferenceRequest,
    OipInferenceResponse,
    OipModelMetadata,
    OipRepositoryChange,
    OipRepositoryEntry,
    OipRepositoryIndexRequest,
    OipServerMetadata,
)
from app.serving.deployment import ServingPlan

logger = logging.getLogger(__name__)

SERVER_NAME = "ml-api"
EXTENSIONS = ["model_repository"]
JSON = "application/json"
# Request-metrics labels of the OIP routes: templates, so tags never become label values.
ROUTE_TEMPLATES = (
    "/v2",
    "/v2/models/{name}",
    "/v2/models/{name}/ready",
    "/v2/models/{name}/infer",
    "/v2/models/{name}/versions/{version}",
    "/v2/models/{name}/versions/{version}/ready",
    "/v2/models/{name}/versions/{version}/infer",
    "/v2/repository/index",
    "/v2/repository/models/{tag}/load",
    "/v2/repository/models/{tag}/unload",
)

Handler = Callable[[Request], Awaitable[Response]]
INFER_ROUTE = "oip_infer"
INFER_HEADERS = (REQUEST_ID_HEADER.encode(), KEY_HEADER.encode())


def oip_status(exc: ServiceError) -> int:
    """OIP status of a domain error: a request the model cannot take is a 400 Bad Request
    (ours says 413/415/422); a body over the byte limit stays 413."""
    if isinstance(exc, InvalidInput):
        return 413 if exc.reason == "too_large" else 400
    return 400 if exc.status_code == 422 else exc.status_code


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def _error_answer(
    exc: Exception, container: Container, method: str, path: str
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """Status, body and extra headers of the OIP answer to an error; call it from the
    ``except`` block (an unexpected error is logged with its traceback)."""
    if not isinstance(exc, ServiceError):
        logger.exception("unhandled error on %s %s", method, path)
        return 500, orjson.dumps({"error": "internal server error"}), []
    if isinstance(exc, InvalidInput):
        container.metrics().request_invalid(exc.reason)
    status = oip_status(exc)
    if status >= 500:
        logger.warning("%s %s: %s", method, path, exc.message)
    headers = [(b"www-authenticate", b"Bearer")] if status == 401 else []
    return status, orjson.dumps({"error": exc.message}), headers


def _oip(handler: Handler) -> Handler:
    """Answer domain errors and surprises in the OIP error shape."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            status, body, headers = _error_answer(
                exc, request.app.state.container, request.method, request.url.path
            )
            response = Response(body, status_code=status, media_type=JSON)
            response.raw_headers.extend(headers)
            return response

    return wrapped


class OipEndpoints:
    """The OIP routes of one server, answering under ``model_name``."""

    def __init__(self, model_name: str, version: str) -> None:
        self.model_name = model_name
        self._server_metadata = orjson.dumps(
            {"name": SERVER_NAME, "version": version, "extensions": EXTENSIONS}
        )

    @property
    def routes(self) -> list[Route]:
        def route(path: str, handler: Handler, method: str, name: str) -> Route:
            return Route(path, _oip(handler), methods=[method], name=name)

        return [  # inference first: the router tries routes in order
            route("/v2/models/{name}/infer", self.infer, "POST", INFER_ROUTE),
            route(
                "/v2/models/{name}/versions/{version}/infer",
                self.infer,
                "POST",
                "oip_version_infer",
            ),
            route("/v2", self.server_metadata, "GET", "oip_server_metadata"),
            route("/v2/models/{name}", self.model_metadata, "GET", "oip_model_metadata"),
            route(
                "/v2/models/{name}/versions/{version}",
                self.model_metadata,
                "GET",
                "oip_model_version_metadata",
            ),
            route("/v2/models/{name}/ready", self.model_ready, "GET", "oip_model_ready"),
            route(
                "/v2/models/{name}/versions/{version}/ready",
                self.model_ready,
                "GET",
                "oip_model_version_ready",
            ),
            route("/v2/repository/index", self.repository_index, "POST", "oip_repository_index"),
            route(
                "/v2/repository/models/{tag}/load",
                self.repository_load,
                "POST",
                "oip_repository_load",
            ),
            route(
                "/v2/repository/models/{tag}/unload",
                self.repository_unload,
                "POST",
                "oip_repository_unload",
            ),
        ]

    # -- helpers -----------------------------------------------------------------------
    def _check_name(self, request: Request) -> None:
        name = request.path_params["name"]
        if name != self.model_name:
            raise UnknownModel(
                f"model {name[:80]!r} not found: this server serves the model "
                f"{self.model_name!r} (GET /v2/models/{self.model_name})"
            )

    def _plan_and_tag(self, request: Request) -> tuple[ServingPlan, str]:
        """The plan serving now and the version the path names (else the primary)."""
        self._check_name(request)
        container: Container = request.app.state.container
        plan = container.deployment().plan()
        version = request.path_params.get("version")
        if version is None:
            return plan, plan.spec.primary
        if version not in plan.models:
            raise ModelNotLoaded(
                f"version {version[:80]!r} of model {self.model_name!r} is not loaded: loaded "
                f"are {', '.join(plan.models)}"
            )
        return plan, version

    # -- metadata and health -----------------------------------------------------------
    async def server_metadata(self, request: Request) -> Response:
        return Response(self._server_metadata, media_type=JSON)

    async def model_metadata(self, request: Request) -> Response:
        plan, tag = self._plan_and_tag(request)
        model = plan.models[tag]
        return _json(
            model_metadata(
                self.model_name,
                model.meta.features,
                model.classes,
                versions=list(plan.models),
                runtime=model.runtime.name,
            )
        )

    async def model_ready(self, request: Request) -> Response:
        self._plan_and_tag(request)  # raises when the model or version is not there
        return Response(status_code=200)

    # -- inference ---------------------------------------------------------------------
    async def infer(self, request: Request) -> Response:
        """Inference through the router: a pinned version, or a name that is not ours."""
        self._check_name(request)
        body, served_id = await self._infer(
            request.app.state.container,
            await request.body(),
            request_id_of(request),
            routing_key_of(request),
            request.path_params.get("version"),
        )
        return Response(body, media_type=JSON, headers={"X-Request-ID": served_id})

    async def infer_direct(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v2/models/<our name>/infer`` as a plain ASGI app, handed the request by
        :class:`~app.api.middleware.DirectRoutesMiddleware`: the same answers as
        :meth:`infer`, with no Starlette ``Request`` or ``Response`` (see ``app.api.asgi``)."""
        container: Container = scope["app"].state.container
        try:
            request_id, key = headers_of(scope, *INFER_HEADERS)
            checked_id, checked = checked_request_id(request_id), checked_key(key)
            body, served_id = await self._infer(
                container, await read_body(receive), checked_id, checked, None
            )
        except ClientDisconnect:
            return  # no one to answer
        except Exception as exc:
            status, body, headers = _error_answer(exc, container, "POST", scope["path"])
            await send_json(send, body, status, headers)
            return
        await send_json(send, body, headers=[(b"x-request-id", served_id.encode("latin-1"))])

    async def _infer(
        self,
        container: Container,
        body: bytes,
        request_id: str | None,
        key: str | None,
        version: str | None,
    ) -> tuple[bytes, str]:
        """The serialised InferenceResponse and the request id that served."""
        service = container.prediction_service()
        oip = read_inference_request(body)
        prediction = await service.predict(oip.decoded, request_id=request_id, key=key, tag=version)
        response = encode_response(
            prediction.result,
            model_name=self.model_name,
            request_id=oip.id if oip.id is not None else prediction.request_id,
            outputs=oip.outputs,
        )
        return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY), prediction.request_id

    # -- repository extension ----------------------------------------------------------
    async def repository_index(self, request: Request) -> Response:
        body = await request.body()
        document = parse_json(body) if body.strip() else {}
        if not isinstance(document, dict):
            raise InvalidInput('body must be a JSON object, e.g. {"ready": true}', "malformed_body")
        only_ready = document.get("ready")
        if only_ready is not None and not isinstance(only_ready, bool):
            raise InvalidInput('"ready" must be true or false', "malformed_body")
        container: Container = request.app.state.container
        registry = container.registry()
        page = await anyio.to_thread.run_sync(lambda: registry.list_experiments())
        plan = container.deployment().current()
        entries = [_entry(summary, plan) for summary in page.experiments]
        if only_ready:
            entries = [entry for entry in entries if entry["state"] == "READY"]
        return _json(entries)

    async def repository_load(self, request: Request) -> Response:
        """Load = make the experiment the primary with all traffic (a hot swap)."""
        container: Container = request.app.state.container
        container.admin_tokens().check(request.headers.get("authorization"))
        tag = validate_tag(request.path_params["tag"])
        outcome = await container.deployment().replace_primary(tag, by="oip-repository")
        return _json(
            {
                "name": tag,
                "state": "READY",
                "reason": "primary",
                "primary": outcome.record.spec.primary,
                "load_ms": round(outcome.load_ms, 1),
            }
        )

    async def repository_unload(self, request: Request) -> Response:
        """Unload = take a candidate or shadow out of the deployment (the primary cannot
        leave by itself: load another experiment instead)."""
        container: Container = request.app.state.container
        container.admin_tokens().check(request.headers.get("authorization"))
        tag = validate_tag(request.path_params["tag"])
        outcome = await container.deployment().remove(
            tag, by="oip-repository", reason="unloaded through the OIP repository extension"
        )
        return _json(
            {
                "name": tag,
                "state": "UNAVAILABLE",
                "reason": "not in the deployment",
                "primary": outcome.record.spec.primary,
                "load_ms": round(outcome.load_ms, 1),
            }
        )


def _entry(summary: ExperimentSummary, plan: ServingPlan | None) -> dict[str, str]:
    tag = summary.tag
    if plan is not None and tag in plan.models:
        spec = plan.spec
        role = spec.role_of(tag)
        if role == "candidate":
            reason = f"candidate: {plan.router.weights.get(tag, 0.0):g} % of requests"
        elif role == "shadow":
            percent = next(s.percent for s in spec.shadows if s.tag == tag)
            reason = f"shadow: sees {percent:g} % of requests, mirrored"
        else:
            reason = f"primary: {plan.router.weights.get(tag, 100.0):g} % of requests"
        return {"name": tag, "state": "READY", "reason": reason}
    if summary.broken:
        return {"name": tag, "state": "UNAVAILABLE", "reason": f"broken: {summary.error}"}
    return {"name": tag, "state": "UNAVAILABLE", "reason": "published, not in the deployment"}


# -- OpenAPI ---------------------------------------------------------------------------------
def document(openapi: dict[str, Any], model_name: str) -> None:
    """Add the OIP operations and their schemas to a generated OpenAPI document."""
    _, definitions = models_json_schema(
        [
            (OipInferenceRequest, "validation"),
            (OipInferenceResponse, "serialization"),
            (OipServerMetadata, "serialization"),
            (OipModelMetadata, "serialization"),
            (OipError, "serialization"),
            (OipRepositoryIndexRequest, "validation"),
            (OipRepositoryEntry, "serialization"),
            (OipRepositoryChange, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )
    openapi.setdefault("components", {}).setdefault("schemas", {}).update(
        definitions.get("$defs", {})
    )

    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/components/schemas/{name}"}

    def answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
        if schema is None:
            return {"description": description}
        return {"description": description, "content": {JSON: {"schema": schema}}}

    def error(description: str) -> dict[str, Any]:
        return answer(description, ref("OipError"))

    name_parameter = {
        "name": "name",
        "in": "path",
        "required": True,
        "description": f"The model name: {model_name!r} (ML_API_OIP_MODEL_NAME).",
        "schema": {"type": "string"},
        "example": model_name,
    }
    version_parameter = {
        "name": "version",
        "in": "path",
        "required": True,
        "description": "A loaded experiment tag (see versions in the model metadata).",
        "schema": {"type": "string"},
    }
    tag_parameter = {
        "name": "tag",
        "in": "path",
        "required": True,
        "description": "An experiment tag.",
        "schema": {"type": "string", "maxLength": 64},
    }
    headers = [
        {
            "name": "X-Request-ID",
            "in": "header",
            "required": False,
            "description": "Echoed as the response's id when the body has none.",
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
        },
        {
            "name": "X-ML-API-Key",
            "in": "header",
            "required": False,
            "description": "Sticky routing key: the same key is served by the same arm.",
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
        },
    ]
    not_found = error(f"Unknown model name (only {model_name!r}), or a version not loaded.")
    no_model = error("No model is active yet.")
    tags = ["open inference protocol (v2)"]
    paths = openapi.setdefault("paths", {})
    paths["/v2"] = {
        "get": {
            "tags": tags,
            "summary": "Server metadata",
            "operationId": "oip_server_metadata",
            "responses": {"200": answer("Name, version, extensions.", ref("OipServerMetadata"))},
        }
    }
    for versioned in (False, True):
        base = "/v2/models/{name}" + ("/versions/{version}" if versioned else "")
        parameters = [name_parameter, *([version_parameter] if versioned else [])]
        which = "a loaded version (experiment tag)" if versioned else "the primary"
        suffix = "_version" if versioned else ""
        paths[base] = {
            "get": {
                "tags": tags,
                "summary": f"Model metadata of {which}",
                "description": "Inputs are the features (pandas codec, in the order an "
                "all-numeric model's single [rows, features] tensor takes them); outputs are "
                "`predict` (labels) and `predict_proba` (class probabilities).",
                "operationId": f"oip_model{suffix}_metadata",
                "parameters": parameters,
                "responses": {
                    "200": answer("The model's inputs and outputs.", ref("OipModelMetadata")),
                    "404": not_found,
                    "503": no_model,
                },
            }
        }
        paths[base + "/ready"] = {
            "get": {
                "tags": tags,
                "summary": f"Is {which} ready? (200 yes, empty body)",
                "operationId": f"oip_model{suffix}_ready",
                "parameters": parameters,
                "responses": {"200": answer("Ready."), "404": not_found, "503": no_model},
            }
        }
        paths[base + "/infer"] = {
            "post": {
                "tags": tags,
                "summary": "Inference"
                + (" pinned to one loaded experiment" if versioned else ", routed like /predict"),
                "description": "Tabular rows as the pandas codec (`parameters.content_type: "
                '"pd"`, one input per feature) or, for all-numeric models, one 2-D FP32/FP64 '
                "tensor [rows, features]. Validated like /predict (same limits and messages).",
                "operationId": f"oip{suffix}_infer",
                "parameters": [*parameters, *headers],
                "requestBody": {
                    "required": True,
                    "content": {
                        JSON: {
                            "schema": ref("OipInferenceRequest"),
                            "examples": {
                                "pandas": {
                                    "summary": "Pandas codec: one input per feature",
                                    "value": OIP_EXAMPLE_PANDAS,
                                },
                                "tensor": {
                                    "summary": "One 2-D tensor (all-numeric models only)",
                                    "value": OIP_EXAMPLE_TENSOR,
                                },
                            },
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "Labels and/or class probabilities, one row per input row.",
                        "content": {
                            JSON: {
                                "schema": ref("OipInferenceResponse"),
                                "example": OIP_EXAMPLE_RESPONSE,
                            }
                        },
                    },
                    "400": error(
                        "Bad request: not JSON, datatype or shape not matching the data, "
                        "missing or unknown input, wrong content_type, unknown output, too many "
                        "rows, a value the feature does not take."
                    ),
                    "404": not_found,
                    "413": error("Body larger than ML_API_MAX_UPLOAD_BYTES."),
                    "503": no_model,
                },
            }
        }
    paths["/v2/repository/index"] = {
        "post": {
            "tags": tags,
            "summary": "Repository index: published experiments and their state",
            "description": "READY for loaded experiments (reason: their role), UNAVAILABLE "
            "otherwise (reason: why, e.g. broken metadata).",
            "operationId": "oip_repository_index",
            "requestBody": {
                "required": False,
                "content": {
                    JSON: {"schema": ref("OipRepositoryIndexRequest"), "example": {"ready": True}}
                },
            },
            "responses": {
                "200": answer(
                    "One entry per experiment, newest first.",
                    {"type": "array", "items": ref("OipRepositoryEntry")},
                ),
                "400": error("Body is not a JSON object with an optional boolean ready."),
                "503": error("Registry unreachable."),
            },
        }
    }
    management = {
        "401": error("Missing or wrong bearer token."),
        "403": error("No admin token is configured: management is disabled."),
        "404": error("No experiment with that tag (load), or not in the deployment (unload)."),
        "503": error("Registry unreachable."),
    }
    paths["/v2/repository/models/{tag}/load"] = {
        "post": {
            "tags": tags,
            "summary": "Load: make the experiment the primary with all traffic (hot swap)",
            "description": "Same as POST /replace_ml_model: loaded and verified while the "
            "current model serves; candidates and shadows are cleared. Bearer token.",
            "operationId": "oip_repository_load",
            "parameters": [tag_parameter],
            "security": [{"bearer": []}],
            "responses": {
                "200": answer("Loaded and serving.", ref("OipRepositoryChange")),
                "400": error("Invalid tag, or the model failed a load check."),
                **management,
            },
        }
    }
    paths["/v2/repository/models/{tag}/unload"] = {
        "post": {
            "tags": tags,
            "summary": "Unload: take a candidate or shadow out of the deployment",
            "description": "Its traffic share returns to the primary. The primary is not "
            "unloaded by itself (409): load another experiment, or PUT /deployment.",
            "operationId": "oip_repository_unload",
            "parameters": [tag_parameter],
            "security": [{"bearer": []}],
            "responses": {
                "200": answer("Out of the deployment.", ref("OipRepositoryChange")),
                "400": error("Invalid tag."),
                "409": error("The experiment is the primary."),
                **management,
            },
        }
    }
    openapi["components"].setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "ML_API_ADMIN_TOKEN",
    }
