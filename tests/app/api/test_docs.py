"""/docs works without the internet: the page and everything it loads come from the service."""

from __future__ import annotations

import re
from typing import Any

import httpx
from openapi_spec_validator.validation import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator

from app.api.docs import as_openapi_30

REFERENCE = re.compile(r"""(?:src|href)="([^"]+)"|url:\s*'([^']+)'""")


async def test_docs_page_loads_only_from_the_service(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    html = page.text
    assert "http://" not in html
    assert "https://" not in html
    assert '"validatorUrl": null' in html  # no badge from the online validator
    references = [a or b for a, b in REFERENCE.findall(html)]
    assert {ref.rsplit("/", 1)[-1] for ref in references} >= {
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "favicon-32x32.png",
        "openapi-3.0.json",
    }
    for reference in references:
        assert reference.startswith("/docs/"), reference
        asset = await client.get(reference)
        assert asset.status_code == 200, reference
        assert len(asset.content) > 100, reference
    css = (await client.get("/docs/assets/swagger-ui.css")).text
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", css)


async def test_swagger_ui_gets_an_openapi_30_rendition_of_the_31_document(
    client: httpx.AsyncClient,
) -> None:
    original = (await client.get("/openapi.json")).json()
    rendition = (await client.get("/docs/openapi-3.0.json")).json()
    assert original["openapi"].startswith("3.1")
    assert rendition["openapi"] == "3.0.3"  # Swagger UI 4 renders 3.0 only
    assert list(OpenAPIV31SpecValidator(original).iter_errors()) == []
    assert list(OpenAPIV30SpecValidator(rendition).iter_errors()) == []
    assert rendition["paths"].keys() == original["paths"].keys()
    assert "/v2/models/{name}/infer" in rendition["paths"]


async def test_redoc_is_off(client: httpx.AsyncClient) -> None:
    assert (await client.get("/redoc")).status_code == 404


def test_openapi_30_rendition_rewrites_what_30_lacks() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "tag": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": "Tag"},
            "spec": {"anyOf": [{"$ref": "#/components/schemas/S"}, {"type": "null"}]},
            "weight": {"type": "number", "exclusiveMinimum": 0, "examples": [5, 10]},
            "kind": {"const": "a"},
            "both": {"type": ["integer", "null"]},
            "ref": {"$ref": "#/components/schemas/S", "description": "with a sibling"},
        },
    }
    document = {"openapi": "3.1.0", "components": {"schemas": {"X": schema}}, "paths": {}}
    converted = as_openapi_30(document)["components"]["schemas"]["X"]["properties"]
    assert converted["tag"] == {"type": "string", "title": "Tag", "nullable": True}
    assert converted["spec"] == {"allOf": [{"$ref": "#/components/schemas/S"}], "nullable": True}
    assert converted["weight"] == {
        "type": "number",
        "minimum": 0,
        "exclusiveMinimum": True,
        "example": 5,
    }
    assert converted["kind"] == {"enum": ["a"]}
    assert converted["both"] == {"type": "integer", "nullable": True}
    assert converted["ref"] == {
        "description": "with a sibling",
        "allOf": [{"$ref": "#/components/schemas/S"}],
    }
    assert document["openapi"] == "3.1.0"  # the original is left alone
