"""Bearer-token check for management endpoints."""

from __future__ import annotations

import hmac

from pydantic import SecretStr

from app.errors import ManagementDisabled, Unauthorized


class AdminTokenChecker:
    def __init__(self, token: SecretStr | None) -> None:
        self._token = None if token is None else token.get_secret_value().encode()

    def check(self, authorization: str | None) -> None:
        """Accept ``Bearer <token>``; the comparison takes the same time wherever it differs."""
        if self._token is None:
            raise ManagementDisabled(
                "management endpoints are disabled: set ML_API_ADMIN_TOKEN (16+ characters) "
                "and restart the service"
            )
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(presented.strip().encode(), self._token):
            raise Unauthorized("invalid bearer token")
