"""GitLab's pipeline trigger API: ``POST /api/v4/projects/:id/trigger/pipeline``."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from app.errors import ServiceError


class TriggerFailed(ServiceError):
    status_code = 502
    code = "trigger_failed"


class GitLabTrigger:
    def __init__(
        self, url: str, project: str, token: SecretStr, ref: str, timeout: float = 10.0
    ) -> None:
        self._endpoint = (
            f"{url.rstrip('/')}/api/v4/projects/{quote(project, safe='')}/trigger/pipeline"
        )
        self._token = token
        self._ref = ref
        self._timeout = timeout

    def trigger(self, variables: Mapping[str, str]) -> dict[str, object]:
        """Start a pipeline on the configured ref with ``variables``; returns GitLab's answer
        (the pipeline's id and web URL)."""
        form = {"token": self._token.get_secret_value(), "ref": self._ref}
        form |= {f"variables[{name}]": value for name, value in variables.items()}
        try:
            response = httpx.post(self._endpoint, data=form, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise TriggerFailed(f"GitLab pipeline trigger unreachable: {exc}") from exc
        if response.status_code >= 300:
            raise TriggerFailed(
                f"GitLab refused the pipeline trigger: {response.status_code} {response.text[:200]}"
            )
        body: dict[str, object] = response.json()
        return body
