from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_documents_every_setting() -> None:
    documented = set(re.findall(r"^\| `(ML_API_[A-Z_]+)` \|", README.read_text(), re.MULTILINE))
    fields = {f"ML_API_{name.upper()}" for name in Settings.model_fields}
    assert fields <= documented, f"undocumented: {sorted(fields - documented)}"


def test_environment_prefix_and_types() -> None:
    settings = Settings(_env_file=None, **{})
    assert settings.poll_seconds == 2
    env = {
        "ML_API_POLL_SECONDS": "0.5",
        "ML_API_MAX_ROWS": "7",
        "ML_API_CORS_ORIGINS": '["https://a.example"]',
    }
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        loaded = Settings()
    assert (loaded.poll_seconds, loaded.max_rows) == (0.5, 7)
    assert loaded.cors_origins == ["https://a.example"]


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("admin_token", "short", "at least 16"),
        ("poll_seconds", 0, "poll_seconds"),
        ("max_rows", -1, "max_rows"),
        ("registry_url", "  ", "ML_API_REGISTRY_URL"),
        ("runtime", "tensorflow", "runtime"),
        ("kafka_bootstrap", " , ", "ML_API_KAFKA_BOOTSTRAP"),
        ("stream_input_topic", "no spaces", "stream_input_topic"),
        ("stream_output_topic", "ml-api.requests", "three different topics"),
        ("stream_max_in_flight", 0, "stream_max_in_flight"),
    ],
)
def test_bad_settings_fail_fast_naming_the_field(field: str, value: object, needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_empty_token_means_management_disabled() -> None:
    assert Settings(admin_token="").admin_token is None
