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

from app.settings import Settings
from tests.delivery.tools import ROOT, find_tool

OVERLAYS = ("staging", "production")
# Validated against the oldest Kubernetes we target and the newest schemas bundled.
KUBERNETES_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())
# The only kinds without a bundled schema: CRDs of the Prometheus Operator, checked by hand.
SERVICE_MONITOR = ("monitoring.coreos.com/v1", "ServiceMonitor")
POD_MONITOR = ("monitoring.coreos.com/v1", "PodMonitor")
# The API's Deployment, and the stream consumer's (components/streaming).
API, STREAM = "ml-api", "ml-api-stream"
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


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [
        doc
        for doc in docs
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    """The one ``kind`` called ``name`` (kustomize may add a content-hash suffix)."""
    found = [
        doc
        for doc in docs
        if doc["kind"] == kind and re.fullmatch(rf"{name}(-[a-z0-9]+)?", doc["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def service_config(docs: list[Doc]) -> Doc:
    return named(docs, "ConfigMap", "ml-api-config")


def container(docs: list[Doc], deployment: str = API) -> Doc:
    containers = one(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def container_port(docs: list[Doc], port: int | str, deployment: str = API) -> int:
    """Resolve a numeric or named port against the container's ports."""
    ports = {p.get("name"): p["containerPort"] for p in container(docs, deployment)["ports"]}
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
            if (doc["apiVersion"], doc["kind"]) in {SERVICE_MONITOR, POD_MONITOR}:
                # No schema is bundled for the CRDs; make sure they stay the only exceptions.
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
            "ConfigMap",
            "CronJob",
            "Deployment",
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "PodMonitor",
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
    pod_labels = one(docs, "Deployment", API)["spec"]["template"]["metadata"]["labels"]
    served_port = container_port(docs, "http")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [container_port(docs, p["targetPort"]) for p in service["spec"]["ports"]] == [
        served_port
    ]

    annotations = one(docs, "Deployment", API)["spec"]["template"]["metadata"]["annotations"]
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
    deployment = one(docs, "Deployment", API)
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
    pod = one(docs, "Deployment", API)["spec"]["template"]["spec"]
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
    pod = one(docs, "Deployment", API)["spec"]["template"]["spec"]
    command = container(docs)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    drain_seconds = int(command[1])
    settings = service_config(docs)["data"]
    grace = int(settings["ML_API_SHUTDOWN_GRACE_SECONDS"])
    assert drain_seconds >= 5
    assert pod["terminationGracePeriodSeconds"] > drain_seconds + grace


def test_resources_have_requests_and_limits(docs: list[Doc]) -> None:
    resources = container(docs)["resources"]
    for bound in ("requests", "limits"):
        assert set(resources[bound]) >= {"cpu", "memory"}, bound


def test_settings_come_from_the_configmap_and_point_at_s3(docs: list[Doc], overlay: str) -> None:
    config = service_config(docs)
    spec = container(docs)
    # kustomize renames the generated ConfigMap (content hash); the reference must follow.
    assert {"configMapRef": {"name": config["metadata"]["name"]}} in spec["envFrom"]
    registry_url = config["data"]["ML_API_REGISTRY_URL"]
    assert re.fullmatch(rf"s3://[a-z0-9.-]+/{overlay}", registry_url), registry_url
    assert one(docs, "Deployment", API)["metadata"]["namespace"] == f"ml-api-{overlay}"


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


# -- the stream consumer (components/streaming) ------------------------------------------
def stream_settings(docs: list[Doc]) -> Settings:
    """The ML_API_* settings of the pods, checked the way `ml-api stream` checks them."""
    data = service_config(docs)["data"]
    fields = {
        name.removeprefix("ML_API_").lower(): value
        for name, value in data.items()
        if name.startswith("ML_API_")
    }
    return Settings(**fields)


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_stream_consumer_runs_the_api_image_with_the_api_settings(
    docs: list[Doc], overlay: str
) -> None:
    api, stream = container(docs), container(docs, STREAM)
    assert stream["image"] == api["image"]
    assert stream["command"] == ["ml-api", "stream"]  # the image's entrypoint serves HTTP
    # One ConfigMap: the same registry, the same deployment spec to follow.
    assert stream["envFrom"] == api["envFrom"]
    settings = stream_settings(docs)  # valid for `ml-api stream`
    assert settings.kafka_bootstrap.split(":")[0] not in {"127.0.0.1", "localhost"}
    # Environments that share a Kafka cluster never share topics or a consumer group.
    topics = [settings.stream_input_topic, settings.stream_output_topic]
    for name in [*topics, settings.stream_error_topic, settings.stream_group]:
        assert overlay in name, name
    stream_secrets = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in stream["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert stream_secrets <= secret_refs(docs)  # the deploy guide's secrets cover them
    assert option(stream["args"], "--host") == "0.0.0.0"


def test_stream_pods_are_scraped_and_never_taken_for_api_pods(docs: list[Doc]) -> None:
    deployment = one(docs, "Deployment", STREAM)
    template = deployment["spec"]["template"]
    labels = template["metadata"]["labels"]
    stream = container(docs, STREAM)
    metrics_port = container_port(docs, "metrics", STREAM)
    assert int(option(stream["args"], "--metrics-port")) == metrics_port
    for probe in ("startupProbe", "livenessProbe"):
        assert stream[probe]["httpGet"]["path"] == "/metrics"
        assert container_port(docs, stream[probe]["httpGet"]["port"], STREAM) == metrics_port

    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == metrics_port
    assert annotations["prometheus.io/path"] == "/metrics"
    monitor = one(docs, "PodMonitor")
    assert (monitor["apiVersion"], monitor["kind"]) == POD_MONITOR
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        assert container_port(docs, endpoint["port"], STREAM) == metrics_port
        assert endpoint["path"] == "/metrics"

    # No API selector takes the consumers' pods (they serve no HTTP), nor the reverse.
    api_pod_labels = one(docs, "Deployment", API)["spec"]["template"]["metadata"]["labels"]
    for selector in (
        one(docs, "Service")["spec"]["selector"],
        one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        one(docs, "Deployment", API)["spec"]["selector"]["matchLabels"],
    ):
        assert not selector.items() <= labels.items(), selector
    assert not deployment["spec"]["selector"]["matchLabels"].items() <= api_pod_labels.items()


def test_stream_pods_answer_what_they_took_before_they_are_killed(docs: list[Doc]) -> None:
    pod = one(docs, "Deployment", STREAM)["spec"]["template"]["spec"]
    stream = container(docs, STREAM)
    grace = int(service_config(docs)["data"]["ML_API_SHUTDOWN_GRACE_SECONDS"])
    # The drain, then the last commit and leaving the group.
    assert pod["terminationGracePeriodSeconds"] >= grace + 10
    security = stream["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    for bound in ("requests", "limits"):
        assert set(stream["resources"][bound]) >= {"cpu", "memory"}, bound


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


# -- batch scoring: the nightly CronJob (in every overlay) and the sharded Indexed Job ---------

SHARDED_JOB = ROOT / "k8s" / "jobs" / "score-sharded"
VARIABLE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def pod_spec(doc: Doc) -> Doc:
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return dict(spec["template"]["spec"])


def pod_labels(doc: Doc) -> dict[str, str]:
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return dict(spec["template"]["metadata"]["labels"])


def environment(docs: list[Doc], spec: Doc) -> dict[str, str]:
    """The variables a container sees: its ConfigMaps' data and its own ``env`` (values from
    the downward API or a Secret stand as a placeholder)."""
    values: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        name = source["configMapRef"]["name"]
        config = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name]
        assert len(config) == 1, f"envFrom names ConfigMap {name}, which is not rendered"
        values |= config[0]["data"]
    for entry in spec.get("env", []):
        values[entry["name"]] = entry.get("value", f"<{entry['name']}>")
    return values


def expand_args(args: list[str], values: dict[str, str]) -> list[str]:
    """``$(VAR)`` in args, as the kubelet expands them; every variable must be defined."""
    used = {name for arg in args for name in VARIABLE.findall(arg)}
    assert used <= set(values), f"args use undefined variables {sorted(used - set(values))}"
    return [VARIABLE.sub(lambda m: values[m.group(1)], arg) for arg in args]


def score_params(args: list[str]) -> dict[str, Any]:
    """``ml-api score`` ARGS parsed by the real command line (nothing runs)."""
    import typer.main

    from app.cli import cli

    assert args[0] == "score", args
    command = typer.main.get_command(cli).commands["score"]  # type: ignore[attr-defined]
    return dict(command.make_context("score", list(args[1:])).params)


def check_batch_pod(docs: list[Doc], doc: Doc, serving: list[Doc]) -> Doc:
    """What every batch pod keeps: hardening, resources, the S3 secret, and no label that
    would let the Service or the PodDisruptionBudget select it."""
    pod = pod_spec(doc)
    (spec,) = pod["containers"]
    assert spec["command"] == ["ml-api"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["restartPolicy"] in {"Never", "OnFailure"}
    for bound in ("requests", "limits"):
        assert set(spec["resources"][bound]) >= {"cpu", "memory"}
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in spec["env"] if "valueFrom" in e
            and "secretKeyRef" in e["valueFrom"]}  # fmt: skip
    assert refs == {"ml-api-s3"}
    labels = pod_labels(doc)
    for selecting in serving:
        selector = selecting["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert not selector.items() <= labels.items(), f"{selecting['kind']} selects batch pods"
    return dict(spec)


def test_nightly_cronjob_scores_with_the_service_settings(docs: list[Doc], overlay: str) -> None:
    cronjob = one(docs, "CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cronjob["spec"]["schedule"].split()) == 5
    assert cronjob["spec"]["jobTemplate"]["spec"]["backoffLimit"] >= 1  # retries resume
    spec = check_batch_pod(docs, cronjob, [one(docs, "Service"), one(docs, "PodDisruptionBudget")])
    # The model and storage settings are the service's own ConfigMap; the image is the one
    # the Deployment runs (the CI deploy job sets both at once).
    assert {"configMapRef": {"name": service_config(docs)["metadata"]["name"]}} in spec["envFrom"]
    assert spec["image"] == container(docs)["image"]

    params = score_params(expand_args(spec["args"], environment(docs, spec)))
    assert params["input"].startswith(f"s3://ml-api-data/{overlay}/")
    assert params["output"].startswith(f"s3://ml-api-data/{overlay}/")
    assert params["input"] != params["output"]
    assert params["shard"] is None
    assert params["progress"] is False


def test_sharded_job_gives_each_index_its_shard_and_its_own_output(kubectl: str) -> None:
    docs = render(kubectl, SHARDED_JOB)
    for doc in docs:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    job = one(docs, "Job")
    assert job["spec"]["completionMode"] == "Indexed"
    count = job["spec"]["completions"]
    assert job["spec"]["parallelism"] == count
    # backoffLimitPerIndex retries a failed shard alone; it needs restartPolicy Never.
    assert job["spec"]["backoffLimitPerIndex"] >= 1
    assert pod_spec(job)["restartPolicy"] == "Never"
    spec = check_batch_pod(docs, job, [])
    assert pod_labels(job)["app.kubernetes.io/name"] != "ml-api"  # not the serving pods
    index_env = next(e for e in spec["env"] if e["name"] == "JOB_COMPLETION_INDEX")
    assert index_env["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    )

    values = environment(docs, spec)
    outputs = set()
    for index in range(count):
        params = score_params(
            expand_args(spec["args"], {**values, "JOB_COMPLETION_INDEX": str(index)})
        )
        assert params["shard"] == f"{index}/{count}"
        outputs.add(params["output"])
        assert params["input"] == values["BATCH_INPUT"]
    assert len(outputs) == count  # one output per shard
