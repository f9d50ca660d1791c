"""Bearer-token check for management endpoints."""

from __future__ import annotations

import hmac

from pydantic import SecretStr

from app.errors import FeedbackDisabled, ManagementDisabled, Unauthorized


class AdminTokenChecker:
    """Checks a bearer token against one setting (each kind of endpoint has its own)."""

    def __init__(self, token: SecretStr | None, setting: str = "ML_API_ADMIN_TOKEN") -> None:
        self._token = None if token is None else token.get_secret_value().encode()
        self._setting = setting

    def check(self, authorization: str | None) -> None:
        """Accept ``Bearer <token>``; the comparison takes the same time wherever it differs."""
        if self._token is None:
            if "FEEDBACK" in self._setting:
                raise FeedbackDisabled(
                    f"feedback is disabled: set {self._setting} (16+ characters) and restart "
                    "the service"
                )
            if "WEBHOOK" in self._setting:
                raise ManagementDisabled(
                    f"the alert webhook is disabled: set {self._setting} (16+ characters) and "
                    "restart the service"
                )
            raise ManagementDisabled(
                f"management endpoints are disabled: set {self._setting} (16+ characters) and "
                "restart the service"
            )
        scheme, _, presented = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
        if not hmac.compare_digest(presented.strip().encode(), self._token):
            raise Unauthorized("invalid bearer token")
