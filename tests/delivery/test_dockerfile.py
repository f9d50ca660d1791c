"""The container image: the Dockerfile lints clean and keeps its promises (multi-stage, locked
dependencies, non-root, health check, exec-form entrypoint); with a Docker daemon, the built
image serves the health endpoints on a read-only root filesystem and stops cleanly."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.delivery.tools import ROOT
from tests.local_server import free_port

DOCKERFILE = ROOT / "Dockerfile"
IMAGE = "ml-api:delivery-test"
READY = "/v2/health/ready"
# The base image for the build: this variable, else python:3.11-slim or the image made by
# scripts/make-base-image.sh when one of them exists locally, else that script is run.
BASE_IMAGE_ENV = "DELIVERY_BASE_IMAGE"
LOCAL_BASE_IMAGE = "ml-api-base:bookworm"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        result.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return result


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def test_hadolint_passes(hadolint: str) -> None:
    result = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_a_build_argument() -> None:
    steps = instructions()
    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert len(froms) >= 2, "expected a multi-stage build"
    for args in froms:
        assert args.startswith("${BASE_IMAGE} AS "), args


def test_package_index_is_whatever_the_build_is_given() -> None:
    args = dict(a.partition("=")[::2] for k, a in instructions() if k == "ARG")
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "POETRY_PYPI_MIRROR_URL"):
        assert args.get(name) == '""', f"ARG {name} must exist with an empty default"
    text = " ".join(args for _, args in instructions())
    urls = re.findall(r"\w+://[^\s'\"]+", text)
    assert all(url.startswith("http://127.0.0.1:") for url in urls), urls


def test_dependencies_come_from_the_lock_without_resolving() -> None:
    runs = " ".join(args for keyword, args in instructions() if keyword == "RUN")
    assert "poetry export --only main" in runs
    assert "--require-hashes" in runs
    assert "--no-deps" in runs
    for forbidden in ("poetry lock", "poetry update", "poetry add"):
        assert forbidden not in runs


def test_runtime_stage_is_non_root_with_health_check_and_exec_entrypoint() -> None:
    stage = final_stage()
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users, "the runtime stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    build_args = dict(a.partition("=")[::2] for k, a in stage if k == "ARG")
    if variable := re.fullmatch(r"\$\{(\w+)\}", user):
        user = build_args[variable.group(1)]
    assert user not in {"", "root", "0"}

    checks = [args for keyword, args in stage if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    assert READY in checks[0]
    assert "curl" not in checks[0]
    assert "wget" not in checks[0]

    entrypoints = [args for keyword, args in stage if keyword == "ENTRYPOINT"]
    assert len(entrypoints) == 1
    assert json.loads(entrypoints[0]) == ["ml-api", "serve"]  # exec form: PID 1 gets SIGTERM


def test_build_context_is_an_allow_list_of_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "everything is excluded first (.git, .venv, data, caches...)"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for keyword, args in instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            copied.update(args.split()[:-1])
    assert allowed == copied


# -- with a Docker daemon: build the image and run it ----------------------------------------


def docker_ok(*args: str, timeout: float = 60) -> bool:
    command = ["docker", *args]
    done = subprocess.run(command, capture_output=True, check=False, timeout=timeout)
    return done.returncode == 0


def pick_base_image() -> str:
    configured = os.environ.get(BASE_IMAGE_ENV)
    if configured:
        return configured
    for candidate in ("python:3.11-slim", LOCAL_BASE_IMAGE):
        if docker_ok("image", "inspect", candidate):
            return candidate
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.skip(
            f"no base image: python:3.11-slim and {LOCAL_BASE_IMAGE} are not present locally "
            "and scripts/make-base-image.sh needs root and debootstrap "
            f"(docker pull python:3.11-slim, or set {BASE_IMAGE_ENV})"
        )
    script = ROOT / "scripts" / "make-base-image.sh"
    subprocess.run(["bash", str(script), LOCAL_BASE_IMAGE], check=True, timeout=900)
    return LOCAL_BASE_IMAGE


@pytest.fixture(scope="session")
def image() -> str:
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is not installed")
    if not docker_ok("info", timeout=30):
        pytest.skip("no Docker daemon is reachable (`docker info` fails)")
    base = pick_base_image()
    command = ["docker", "build", "--network", "host", "--tag", IMAGE]
    command += ["--build-arg", f"BASE_IMAGE={base}"]
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "POETRY_PYPI_MIRROR_URL"):
        if os.environ.get(name):
            command += ["--build-arg", f"{name}={os.environ[name]}"]
    build = subprocess.run(
        [*command, str(ROOT)], capture_output=True, text=True, check=False, timeout=1500
    )
    assert build.returncode == 0, f"docker build failed:\n{build.stdout[-6000:]}{build.stderr}"
    return IMAGE


class Container:
    """One run of the image on the host network, hardened like the Kubernetes pod."""

    def __init__(self, image: str, registry: Path) -> None:
        self.name = f"ml-api-test-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        subprocess.run(
            [
                "docker", "run", "--detach", "--name", self.name, "--network", "host",
                "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",
                "--security-opt", "no-new-privileges",
                "--env", "ML_API_HOST=127.0.0.1", "--env", f"ML_API_PORT={self.port}",
                "--volume", f"{registry}:/data/registry",
                image,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip

    def logs(self) -> str:
        done = subprocess.run(
            ["docker", "logs", self.name], capture_output=True, text=True, check=False, timeout=30
        )
        return done.stdout + done.stderr

    def state(self, field: str) -> str:
        done = subprocess.run(
            ["docker", "inspect", "--format", f"{{{{.State.{field}}}}}", self.name],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return done.stdout.strip()

    def wait_for(self, path: str, status: int, timeout: float = 90) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last: httpx.Response | str = "no answer"
        while time.monotonic() < deadline:
            if self.state("Running") != "true":
                pytest.fail(f"container exited early:\n{self.logs()}")
            try:
                last = httpx.get(self.base_url + path, timeout=2)
                if last.status_code == status:
                    return last
            except httpx.TransportError as error:
                last = repr(error)
            time.sleep(0.5)
        pytest.fail(f"GET {path}: wanted {status}, last: {last}\n{self.logs()}")

    def remove(self) -> None:
        subprocess.run(
            ["docker", "rm", "--force", self.name], capture_output=True, check=False, timeout=60
        )


def writable_copy(source: Path | None, target: Path) -> Path:
    """A registry folder the container's non-root user can read and write."""
    if source is None:
        target.mkdir()
    else:
        shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    return target


@pytest.fixture
def empty_registry_container(image: str, tmp_path: Path) -> Iterator[Container]:
    container = Container(image, writable_copy(None, tmp_path / "registry"))
    yield container
    container.remove()


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.timeout(1800)
def test_image_metadata(image: str) -> None:
    done = subprocess.run(
        ["docker", "image", "inspect", image], capture_output=True, check=True, timeout=30
    )
    config = json.loads(done.stdout)[0]["Config"]
    assert config["User"] not in {"", "root", "0", "0:0"}
    assert config["Entrypoint"] == ["ml-api", "serve"]
    assert READY in " ".join(config["Healthcheck"]["Test"])


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.timeout(1800)
def test_container_is_live_not_ready_without_model_and_stops_cleanly(
    empty_registry_container: Container,
) -> None:
    container = empty_registry_container
    container.wait_for("/v2/health/live", 200)
    ready = httpx.get(container.base_url + READY, timeout=5)
    assert ready.status_code == 503, ready.text

    started = time.monotonic()
    subprocess.run(["docker", "stop", "--time", "30", container.name], check=True, timeout=60)
    elapsed = time.monotonic() - started
    assert container.state("ExitCode") == "0", container.logs()
    assert elapsed < 25, f"SIGTERM did not stop the server promptly ({elapsed:.1f} s)"


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.timeout(1800)
def test_container_becomes_ready_with_a_published_model(
    image: str, seed_registry: Path, tmp_path: Path
) -> None:
    container = Container(image, writable_copy(seed_registry, tmp_path / "registry"))
    try:
        container.wait_for(READY, 200)
    finally:
        container.remove()
