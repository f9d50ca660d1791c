"""Alertmanager's webhook payload (version 4), as far as the retraining trigger reads it."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str = Field(max_length=32)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None  # noqa: N815 - Alertmanager's field name
    fingerprint: str = Field(default="", max_length=128)

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")


class AlertmanagerPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str = Field(default="4", max_length=8)
    status: str = Field(default="firing", max_length=32)
    receiver: str = Field(default="", max_length=256)
    groupKey: str = Field(default="", max_length=1024)  # noqa: N815
    alerts: list[Alert] = Field(max_length=1000)
