"""The stream consumer's settings, taken once from :class:`app.settings.Settings`."""

from __future__ import annotations

from dataclasses import dataclass

from app.settings import Settings

CLIENT_ID = "ml-api-stream"


@dataclass(frozen=True)
class StreamConfig:
    bootstrap: str
    input_topic: str
    output_topic: str
    error_topic: str
    group: str
    session_timeout_ms: int
    fetch_max_wait_ms: int
    max_in_flight: int
    batch_max_messages: int
    batch_max_wait_seconds: float
    commit_interval_seconds: float
    drain_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamConfig:
        return cls(
            bootstrap=settings.kafka_bootstrap,
            input_topic=settings.stream_input_topic,
            output_topic=settings.stream_output_topic,
            error_topic=settings.stream_error_topic,
            group=settings.stream_group,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            max_in_flight=settings.stream_max_in_flight,
            batch_max_messages=settings.stream_batch_max_messages,
            batch_max_wait_seconds=settings.stream_batch_max_wait_ms / 1000,
            commit_interval_seconds=settings.stream_commit_interval_ms / 1000,
            drain_seconds=float(settings.shutdown_grace_seconds),
        )

    @property
    def resume_below(self) -> int:
        """Fetching, once paused, resumes when in-flight messages drop to this many: room for
        a good share of a batch rather than for one message at a time."""
        room = max(1, min(self.batch_max_messages, self.max_in_flight // 2))
        return self.max_in_flight - room
