"""docker-compose.yml: a valid Compose file whose services, mounts and ports line up with the
Prometheus and Grafana configuration it mounts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.settings import Settings
from tests.delivery.tools import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
DASHBOARD_UID = "ml-api-model-monitoring"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")))


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts from this repository."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = ROOT / source
    return mounts


def compose_command() -> list[str] | None:
    """`docker compose` (v2 plugin) or the standalone docker-compose, if installed."""
    if shutil.which("docker"):
        plugin = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False, timeout=30
        )
        if plugin.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_file_is_valid_for_docker_compose() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor docker-compose is installed")
    result = subprocess.run(
        [*command, "--file", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_stack_has_service_and_monitoring(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "ml-api",
        "ml-api-stream",
        "kafka",
        "kafka-topics",
        "redis",
        "alertmanager",
        "prometheus",
        "grafana",
        "node-exporter",
    }
    api = compose["services"]["ml-api"]
    assert api["build"]["context"] == "."
    assert "BASE_IMAGE" in api["build"]["args"]
    assert "8000:8000" in api["ports"]
    assert api["read_only"] is True
    assert "/tmp" in api["tmpfs"]


def test_the_service_shares_feedback_state_through_the_redis_service(
    compose: dict[str, Any],
) -> None:
    api = compose["services"]["ml-api"]
    assert api["environment"]["ML_API_STATE_URL"] == "redis://redis:6379/0"
    assert "redis" in api["depends_on"]
    assert "redis-server" in compose["services"]["redis"]["command"]


def test_mounted_config_exists_and_matches_grafana_provisioning(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, source in bind_mounts(service).items():
            if source != ROOT / "registry":  # made by training, not committed
                assert source.exists(), f"{name}: {source} (mounted at {target}) is missing"

    prometheus = bind_mounts(services["prometheus"])
    assert prometheus["/etc/prometheus"] == ROOT / "prometheus"
    config_flag = "--config.file=/etc/prometheus/prometheus.yml"
    assert config_flag in services["prometheus"]["command"]

    grafana = bind_mounts(services["grafana"])
    assert grafana["/etc/grafana/provisioning"] == ROOT / "grafana" / "provisioning"
    providers_dir = ROOT / "grafana" / "provisioning" / "dashboards"
    paths = {
        provider["options"]["path"]
        for file in providers_dir.glob("*.y*ml")
        for provider in yaml.safe_load(file.read_text(encoding="utf-8"))["providers"]
    }
    for path in paths:
        assert grafana[path] == ROOT / "grafana" / "dashboards", path
    uids = {
        json.loads(file.read_text(encoding="utf-8")).get("uid")
        for file in (ROOT / "grafana" / "dashboards").glob("*.json")
    }
    assert DASHBOARD_UID in uids  # http://localhost:3000/d/ml-api-model-monitoring


def test_prometheus_and_grafana_address_compose_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text("utf-8"))
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    assert "ml-api:8000" in targets
    assert "node-exporter:9100" in targets
    for target in targets:
        host = target.split(":")[0]
        assert host == "localhost" or host in services, f"scrape target {target}"

    datasources = ROOT / "grafana" / "provisioning" / "datasources"
    urls = {
        source["url"]
        for file in datasources.glob("*.y*ml")
        for source in yaml.safe_load(file.read_text(encoding="utf-8"))["datasources"]
    }
    assert "http://prometheus:9090" in urls
    assert "9090:9090" in services["prometheus"]["ports"]
    assert "3000:3000" in services["grafana"]["ports"]


def test_stream_consumer_shares_the_api_image_and_registry_and_reaches_kafka(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    api, stream = services["ml-api"], services["ml-api-stream"]
    assert (stream["build"], stream["image"]) == (api["build"], api["image"])
    assert stream["entrypoint"] == ["ml-api", "stream"]
    assert bind_mounts(stream) == bind_mounts(api)
    environment = stream["environment"]
    assert environment["ML_API_REGISTRY_URL"] == api["environment"]["ML_API_REGISTRY_URL"]
    settings = Settings(
        **{
            name.removeprefix("ML_API_").lower(): value
            for name, value in environment.items()
            if name.startswith("ML_API_")
        }
    )

    # The bootstrap address is one the broker advertises to the compose network.
    kafka = services["kafka"]["environment"]
    advertised = {url.split("://", 1)[1] for url in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    assert settings.kafka_bootstrap in advertised
    assert settings.kafka_bootstrap.split(":")[0] in services
    # The topics exist before the consumer starts (the broker creates none by itself).
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert stream["depends_on"]["kafka-topics"]["condition"] == "service_completed_successfully"
    script = " ".join(services["kafka-topics"]["command"])
    loop = re.search(r"for topic in ([^;]+);", script)
    assert loop, script
    assert set(loop.group(1).split()) == {
        settings.stream_input_topic,
        settings.stream_output_topic,
        settings.stream_error_topic,
    }

    # Prometheus scrapes the consumer's /metrics port.
    command = stream["command"]
    port = command[command.index("--metrics-port") + 1]
    assert port in stream["expose"]
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text("utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["ml-api-stream"]["static_configs"][0]["targets"] == [f"ml-api-stream:{port}"]

    # SIGTERM drains: compose waits longer than the drain before it kills.
    assert int(stream["stop_grace_period"].removesuffix("s")) > settings.shutdown_grace_seconds
    assert stream["read_only"] is True
    assert "/tmp" in stream["tmpfs"]
