"""Kubernetes manifests: both overlays render with kustomize, validate against the API
schemas, and keep what zero-downtime rollouts and a hardened pod depend on."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.delivery.tools import ROOT, find_tool

OVERLAYS = ("staging", "production")
# Validated against the oldest Kubernetes we target and the newest schemas bundled.
KUBERNETES_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
# The only kind without a bundled schema: a CRD of the Prometheus Operator, checked by hand.
SERVICE_MONITOR = ("monitoring.coreos.com/v1", "ServiceMonitor")
LIVE, READY = "/v2/health/live", "/v2/health/ready"

Doc = dict[str, Any]


def render(kubectl: str, overlay_dir: Path) -> list[Doc]:
    result = subprocess.run(
        [kubectl, "kustomize", str(overlay_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay_dir} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def docs(kubectl: str, overlay: str) -> list[Doc]:
    return render(kubectl, ROOT / "k8s" / "overlays" / overlay)


def one(docs: list[Doc], kind: str) -> Doc:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(docs: list[Doc]) -> Doc:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def container_port(docs: list[Doc], port: int | str) -> int:
    """Resolve a numeric or named port against the container's ports."""
    ports = {p.get("name"): p["containerPort"] for p in container(docs)["ports"]}
    if isinstance(port, str):
        assert port in ports, f"named port {port!r} is not a container port ({ports})"
        return int(ports[port])
    assert port in ports.values(), f"port {port} is not a container port ({ports})"
    return port


def test_overlay_validates_against_kubernetes_schemas(docs: list[Doc]) -> None:
    errors: list[str] = []
    for doc in docs:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        for version in KUBERNETES_VERSIONS:
            if (doc["apiVersion"], doc["kind"]) == SERVICE_MONITOR:
                # No schema is bundled for the CRD; make sure that stays the only exception.
                with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                    kubernetes_validate.validate(doc, version, strict=True)
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(part) for part in error.path)
                errors.append(f"{name} (k8s {version}): {path}: {error.message}")
            except kubernetes_validate.SchemaNotFoundError as error:
                errors.append(f"{name} (k8s {version}): {error.message}")
    assert not errors, "\n".join(errors)


def test_overlay_has_every_delivery_object(docs: list[Doc]) -> None:
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Service",
            "ServiceMonitor",
        ]
    )
    namespaces = {doc["metadata"].get("namespace") for doc in docs}
    assert len(namespaces) == 1, namespaces
    assert None not in namespaces


def test_probes_use_the_health_endpoints_on_the_served_port(docs: list[Doc]) -> None:
    spec = container(docs)
    probes = {kind: spec[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe")}
    readiness = spec["readinessProbe"]["httpGet"]
    assert probes["startupProbe"]["path"] == LIVE
    assert probes["livenessProbe"]["path"] == LIVE
    assert readiness["path"] == READY

    args = spec["args"]
    served_port = int(args[args.index("--port") + 1])
    assert args[args.index("--host") + 1] == "0.0.0.0"
    for probe in [*probes.values(), readiness]:
        assert container_port(docs, probe["port"]) == served_port


def test_service_and_scraping_reach_the_container_port(docs: list[Doc]) -> None:
    service = one(docs, "Service")
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    served_port = container_port(docs, "http")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [container_port(docs, p["targetPort"]) for p in service["spec"]["ports"]] == [
        served_port
    ]

    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == served_port
    assert annotations["prometheus.io/path"] == "/metrics"

    monitor = one(docs, "ServiceMonitor")
    assert (monitor["apiVersion"], monitor["kind"]) == SERVICE_MONITOR
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    service_port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in service_port_names
        assert endpoint["path"] == "/metrics"


def test_rollout_and_scaling_keep_two_serving_pods(docs: list[Doc]) -> None:
    deployment = one(docs, "Deployment")
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert strategy["rollingUpdate"]["maxSurge"] >= 1

    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    # The HPA owns the replica count; a fixed count, if any, must not undercut it.
    assert hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    assert deployment["spec"].get("replicas", hpa["spec"]["minReplicas"]) >= 2

    pdb = one(docs, "PodDisruptionBudget")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"].get("maxUnavailable", 0) == 1 or pdb["spec"].get("minAvailable", 0) >= 1


def test_pod_runs_non_root_on_a_read_only_root_filesystem(docs: list[Doc]) -> None:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    spec = container(docs)
    security = spec["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False

    # /tmp is the one writable place, and Prometheus' multiprocess files live under it.
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    writable = {m["mountPath"] for m in spec["volumeMounts"] if m["name"] in empty_dirs}
    assert "/tmp" in writable
    env = {e["name"]: e.get("value") for e in spec["env"]}
    multiproc_dir = env["PROMETHEUS_MULTIPROC_DIR"]
    assert any(multiproc_dir == path or multiproc_dir.startswith(path + "/") for path in writable)


def test_pods_drain_before_they_stop(docs: list[Doc]) -> None:
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    command = container(docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain_seconds = int(command[1])
    settings = one(docs, "ConfigMap")["data"]
    grace = int(settings["ML_API_SHUTDOWN_GRACE_SECONDS"])
    assert drain_seconds >= 5
    assert pod["terminationGracePeriodSeconds"] > drain_seconds + grace


def test_resources_have_requests_and_limits(docs: list[Doc]) -> None:
    resources = container(docs)["resources"]
    for bound in ("requests", "limits"):
        assert set(resources[bound]) >= {"cpu", "memory"}, bound


def test_settings_come_from_the_configmap_and_point_at_s3(docs: list[Doc], overlay: str) -> None:
    config = one(docs, "ConfigMap")
    spec = container(docs)
    # kustomize renames the generated ConfigMap (content hash); the reference must follow.
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in spec["envFrom"]
    registry_url = config["data"]["ML_API_REGISTRY_URL"]
    assert re.fullmatch(rf"s3://[a-z0-9.-]+/{overlay}", registry_url), registry_url
    assert one(docs, "Deployment")["metadata"]["namespace"] == f"ml-api-{overlay}"


def secret_refs(docs: list[Doc]) -> set[tuple[str, str]]:
    return {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container(docs)["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_secrets_are_referenced_and_documented_never_rendered(docs: list[Doc]) -> None:
    assert not [doc for doc in docs if doc["kind"] == "Secret"]
    refs = secret_refs(docs)
    env = {e["name"]: e for e in container(docs)["env"]}
    for name in ("ML_API_ADMIN_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "secretKeyRef" in env[name]["valueFrom"], name
    # The operator creates them: the deploy guide shows the command for each name and key.
    guides = [ROOT / "docs" / "deploy.md", ROOT / "README.md"]
    text = "\n".join(p.read_text(encoding="utf-8") for p in guides if p.exists())
    for secret, key in refs:
        # The command with its backslash-continued lines.
        pattern = rf"kubectl [^\n]*create secret generic {secret}\b(?:[^\n]*\\\n)*[^\n]*"
        command = re.search(pattern, text)
        assert command, f"the deploy guide does not show how to create Secret {secret}"
        assert f"--from-literal={key}=" in command.group(0), f"{secret} lacks key {key}"


def iter_repo_yaml() -> Iterator[Path]:
    skip = {".git", ".venv", ".tools", ".gitlab-ci-local", "node_modules", ".cache"}
    for path in sorted(ROOT.rglob("*")):
        parts = set(path.relative_to(ROOT).parts)
        if path.suffix in {".yaml", ".yml"} and path.is_file() and not parts & skip:
            yield path


class _AnyTagLoader(yaml.SafeLoader):
    """Loads YAML with custom tags (GitLab's !reference, ...) as plain data."""


def _construct_any(loader: yaml.SafeLoader, _suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_AnyTagLoader.add_multi_constructor("!", _construct_any)


def test_no_secret_with_data_is_committed() -> None:
    offenders = []
    for path in iter_repo_yaml():
        text = path.read_text(encoding="utf-8")
        for doc in yaml.load_all(text, Loader=_AnyTagLoader):
            is_secret = isinstance(doc, dict) and doc.get("kind") == "Secret"
            if is_secret and (doc.get("data") or doc.get("stringData")):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"Secret objects with values are committed: {offenders}"


# -- the image the CI deploy job sets is the one the build job pushes --------------------------


def load_ci() -> dict[str, Any]:
    text = (ROOT / ".gitlab-ci.yml").read_text(encoding="utf-8")
    return dict(yaml.load(text, Loader=_AnyTagLoader))  # noqa: S506 (safe subclass)


def expand(value: str, variables: dict[str, str]) -> str:
    """Expand $VAR and ${VAR} the way the CI runner does, recursively."""
    pattern = re.compile(r"\$\{(\w+)(?::-[^}]*)?\}|\$(\w+)")
    for _ in range(10):
        expanded = pattern.sub(lambda m: variables.get(m.group(1) or m.group(2), ""), value)
        if expanded == value:
            return expanded
        value = expanded
    raise AssertionError(f"variables do not settle: {value}")


def job_script(ci: dict[str, Any], job: str) -> str:
    """A job's script, following `extends` to the template that defines it."""
    spec = ci[job]
    while "script" not in spec:
        parents = spec["extends"]
        parents = [parents] if isinstance(parents, str) else parents
        spec = next(ci[p] for p in parents if "script" in ci[p] or "extends" in ci[p])
    return "\n".join(spec["script"])


def set_image(kustomization: Path, name: str, image: str) -> None:
    """What `kustomize edit set image NAME=REPO:TAG` does to the images list."""
    repository, tag = image.rsplit(":", 1)
    data = yaml.safe_load(kustomization.read_text(encoding="utf-8"))
    images = [entry for entry in data.get("images", []) if entry["name"] != name]
    images.append({"name": name, "newName": repository, "newTag": tag})
    data["images"] = images
    kustomization.write_text(yaml.safe_dump(data), encoding="utf-8")


def test_deploy_job_sets_the_image_the_build_job_pushes(
    kubectl: str, overlay: str, tmp_path: Path
) -> None:
    ci = load_ci()
    variables = {str(k): str(v) for k, v in ci["variables"].items()}
    variables |= {
        "CI_REGISTRY_IMAGE": "registry.example.test/group/ml-api",
        "CI_COMMIT_SHORT_SHA": "0badc0de",
    }
    build = job_script(ci, "build")
    # buildctl pushes every name of --output "type=image,\"name=A,B\",push=true".
    output = re.search(r'--output "type=image,\\"name=([^"\\]+)\\",push=true"', build)
    assert output, "the build job does not push an image with buildctl"
    pushed = {expand(name, variables) for name in output.group(1).split(",")}
    expected = "registry.example.test/group/ml-api:0badc0de"
    assert expected in pushed, pushed

    deploy_job = f"deploy-{overlay}"
    assert ci[deploy_job]["variables"]["DEPLOY_ENV"] == overlay
    script = job_script(ci, deploy_job)
    match = re.search(r'kustomize edit set image "(?P<name>[\w.-]+)=(?P<image>[^"]+)"', script)
    assert match, "the deploy job does not set the image with kustomize"
    assert 'cd "k8s/overlays/$DEPLOY_ENV"' in script
    assert "rollout status deployment/ml-api" in script
    deployed = expand(match.group("image"), variables)
    assert deployed == expected

    # As committed, the overlay already names a pullable image of the same repository name.
    committed = container(render(kubectl, ROOT / "k8s" / "overlays" / overlay))["image"]
    repository = committed.rsplit(":", 1)[0]
    assert "/" in repository, f"the overlay does not set the image repository: {committed}"
    assert repository.rsplit("/", 1)[1] == expected.rsplit(":", 1)[0].rsplit("/", 1)[1]

    # The kustomize image name must be the one the base Deployment and overlays use.
    work = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", work)
    overlay_dir = work / "overlays" / overlay
    kustomize = find_tool("kustomize")
    if kustomize is not None:
        edit = [kustomize, "edit", "set", "image", f"{match.group('name')}={deployed}"]
        subprocess.run(edit, cwd=overlay_dir, check=True, timeout=60)
    else:  # the same edit, without the kustomize binary
        set_image(overlay_dir / "kustomization.yaml", match.group("name"), deployed)
    assert container(render(kubectl, overlay_dir))["image"] == expected
