"""The Kubernetes manifests (deploy/kubernetes): every overlay renders with `kubectl kustomize`,
every object validates offline against the Kubernetes schemas, and the manifests agree with the
code they run: the `faas` commands, the settings, the registry's ports, calls and job kinds, and
the JetStream names the bus creates. No cluster is needed."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import typer
import yaml

from faas import __version__
from faas.cli import app as cli_app
from faas.integrations.bus.subjects import safe_name, stream_names
from faas.services import REGISTRY, load_settings
from faas.services.gateway_service.routing_table import load_routing
from faas.shared.config import Settings
from tests.conftest import unavailable

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
OVERLAYS = ("single", "production")
KUBERNETES_VERSION = "1.32"
IMAGE = f"ghcr.io/OWNER/faas:{__version__}"
SECRET = "faas-secrets"
KEDA_METADATA = {"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold"}

Object = dict[str, Any]


@functools.cache
def _kustomize(overlay: str) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        unavailable("kubectl is not installed: the manifests cannot be rendered")
    done = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize overlays/{overlay}:\n{done.stderr}"
    return done.stdout


def render(overlay: str) -> list[Object]:
    return [obj for obj in yaml.safe_load_all(_kustomize(overlay)) if obj]


def of_kind(objects: list[Object], kind: str) -> dict[str, Object]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def pod_spec(workload: Object) -> Object:
    spec: Object = workload["spec"]["template"]["spec"]
    return spec


def container_of(objects: list[Object], deployment: str) -> Object:
    """The one container of Deployment `deployment`."""
    (container,) = pod_spec(of_kind(objects, "Deployment")[deployment])["containers"]
    return container


def containers(objects: list[Object]) -> list[tuple[str, Object, Object]]:
    """(workload name, pod spec, container) of every Deployment and Job."""
    return [
        (obj["metadata"]["name"], pod_spec(obj), container)
        for obj in objects
        if obj["kind"] in ("Deployment", "Job")
        for container in pod_spec(obj)["containers"]
    ]


def environment(objects: list[Object], container: Object) -> dict[str, Object]:
    """The container's variables: its ConfigMaps' data (envFrom) and its own `env` entries,
    each as {"value": ...} or {"valueFrom": ...}."""
    config_maps = of_kind(objects, "ConfigMap")
    variables: dict[str, Object] = {}
    for source in container.get("envFrom", []):
        data = config_maps[source["configMapRef"]["name"]]["data"]
        variables |= {name: {"value": value} for name, value in data.items()}
    for entry in container.get("env", []):
        variables[entry["name"]] = {k: v for k, v in entry.items() if k != "name"}
    return variables


def dns_name(service: str) -> str:
    return "faas-" + service.replace("_", "-")


def service_url(service: str) -> str:
    return f"http://{dns_name(service)}:{REGISTRY[service].port}"


@pytest.fixture(params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> list[Object]:
    return render(request.param)


@pytest.fixture
def production() -> list[Object]:
    return render("production")


@pytest.fixture
def no_faas_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built from a manifest see the manifest's variables, not this process's."""
    for name in [n for n in os.environ if n.startswith("FAAS_")]:
        monkeypatch.delenv(name)


def test_every_object_validates_against_the_kubernetes_schemas(objects: list[Object]) -> None:
    problems = []
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: test_keda_scales_the_workers_on_every_job_consumer
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            problems.append(f"{obj['kind']}/{obj['metadata']['name']} {where}: {exc.message}")
    assert problems == []


def test_the_schema_check_refuses_a_misspelled_field() -> None:
    service = next(o for o in render("single") if o["kind"] == "Service")
    broken = {**service, "spec": {**service["spec"], "selectr": {"app": "faas"}}}
    with pytest.raises(kubernetes_validate.ValidationError, match="selectr"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_every_http_deployment_has_both_probes_on_its_port(objects: list[Object]) -> None:
    portless = []
    for name, deployment in of_kind(objects, "Deployment").items():
        for container in pod_spec(deployment)["containers"]:
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            if not ports:
                portless.append(name)
                continue
            for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
                check = container[probe]["httpGet"]
                assert check["path"] == path, (name, probe)
                assert check["port"] in (*ports, *ports.values()), (name, probe)
    # Workers too: `faas worker --health-port` serves the probes.
    assert portless == []


def test_every_pod_is_sized_and_locked_down(objects: list[Object]) -> None:
    for name, pod, container in containers(objects):
        resources = container["resources"]
        for bound in ("requests", "limits"):
            assert set(resources[bound]) == {"cpu", "memory"}, (name, bound)
        security = container["securityContext"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        assert "emptyDir" in mounts["/tmp"], name
        data_dir = environment(objects, container)["FAAS_DATA_DIR"]["value"]
        assert data_dir in mounts, f"{name}: the data dir {data_dir} is on the read-only root"


def test_every_container_runs_an_existing_faas_command(objects: list[Object]) -> None:
    commands = typer.main.get_group(cli_app).commands
    for name, _, container in containers(objects):
        assert container["command"] == ["faas"], name
        args = container["args"]
        assert args[0] in commands, f"{name}: `faas {args[0]}` is no faas command"
        if args[0] == "serve":
            assert args[1] in REGISTRY, f"{name}: `faas serve {args[1]}`: no such service"
        assert container["image"] == IMAGE, name


@pytest.mark.usefixtures("no_faas_environment")
def test_every_faas_variable_is_a_setting_with_a_valid_value(objects: list[Object]) -> None:
    known = {f"FAAS_{field.upper()}" for field in Settings.model_fields}
    service_url_variable = re.compile(r"FAAS_(?P<name>[A-Z_]+)_URL")
    for name, _, container in containers(objects):
        values: dict[str, str] = {}
        for variable, source in environment(objects, container).items():
            if not variable.startswith("FAAS_"):
                continue
            match = service_url_variable.fullmatch(variable)
            is_service_url = match is not None and match["name"].lower() in REGISTRY
            assert variable in known or is_service_url, f"{name}: {variable} is no setting"
            if "value" in source:
                values[variable.removeprefix("FAAS_").lower()] = source["value"]
        load_settings(**values)  # raises ConfigError naming a value that is not allowed


def test_each_service_runs_on_its_registry_port(production: list[Object]) -> None:
    services = of_kind(production, "Service")
    for spec in REGISTRY:
        container = container_of(production, dns_name(spec.name))
        assert container["args"] == ["serve", spec.name]
        assert container["ports"] == [{"name": "http", "containerPort": spec.port}]
        (port,) = services[dns_name(spec.name)]["spec"]["ports"]
        assert (port["port"], port["targetPort"]) == (spec.port, "http"), spec.name


def test_each_service_has_the_url_of_every_service_it_calls(production: list[Object]) -> None:
    for spec in REGISTRY:
        env = environment(production, container_of(production, dns_name(spec.name)))
        for callee in spec.calls:
            assert env[f"FAAS_{callee.upper()}_URL"] == {"value": service_url(callee)}, spec.name


def test_workers_build_the_job_services_and_reach_what_they_call(
    production: list[Object],
) -> None:
    container = container_of(production, "faas-worker")
    assert container["args"][0] == "worker"
    assert "--health-port" in container["args"]
    env = environment(production, container)
    with_jobs = [spec for spec in REGISTRY if spec.job_kinds]
    assert env["FAAS_SERVICES"]["value"].split(",") == [spec.name for spec in with_jobs]
    for callee in {callee for spec in with_jobs for callee in spec.calls}:
        assert env[f"FAAS_{callee.upper()}_URL"] == {"value": service_url(callee)}
    assert env["FAAS_NATS_URL"]["valueFrom"]["secretKeyRef"]["name"] == SECRET


def test_autoscalers_and_disruption_budgets_target_deployments_that_exist(
    objects: list[Object],
) -> None:
    deployments = of_kind(objects, "Deployment")
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for name, scaler in of_kind(objects, kind).items():
            target = scaler["spec"]["scaleTargetRef"]
            assert target.get("kind", "Deployment") == "Deployment", name
            assert target["name"] in deployments, f"{kind} {name} scales nothing"
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    for name, budget in of_kind(objects, "PodDisruptionBudget").items():
        selector = budget["spec"]["selector"]["matchLabels"].items()
        assert any(selector <= labels.items() for labels in pod_labels), f"PDB {name}"


def test_production_keeps_two_replicas_of_every_service(production: list[Object]) -> None:
    autoscalers = of_kind(production, "HorizontalPodAutoscaler")
    budgets = of_kind(production, "PodDisruptionBudget")
    for spec in REGISTRY:
        name = dns_name(spec.name)
        autoscaler = autoscalers[name]["spec"]
        assert 2 <= autoscaler["minReplicas"] <= autoscaler["maxReplicas"], name
        (metric,) = autoscaler["metrics"]
        assert metric["resource"]["name"] == "cpu", name
        assert budgets[name]["spec"]["maxUnavailable"] == 1, name
    assert "faas-worker" not in autoscalers  # KEDA owns the workers' replica count


def test_keda_scales_the_workers_on_every_job_consumer(production: list[Object]) -> None:
    (scaled,) = [o for o in production if o["kind"] == "ScaledObject"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "faas-worker"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (settings,) = [o for o in production if o["metadata"]["name"].startswith("faas-settings")]
    jobs_stream, _ = stream_names(settings["data"].get("FAAS_NATS_PREFIX", ""))
    consumers = []
    for trigger in spec["triggers"]:
        assert trigger["type"] == "nats-jetstream"
        metadata = trigger["metadata"]
        assert set(metadata) >= KEDA_METADATA
        assert metadata["stream"] == jobs_stream
        assert int(metadata["lagThreshold"]) > 0
        consumers.append(metadata["consumer"])
    kinds = [kind for s in REGISTRY for kind in s.job_kinds]
    assert sorted(consumers) == sorted(safe_name(kind) for kind in kinds)


def test_the_migration_job_is_applied_alone_first(production: list[Object]) -> None:
    """deploy/kubernetes/README.md applies `-l app.kubernetes.io/component=config`, then
    `=migration`, before everything else: that must be the Job and exactly what it reads."""
    first = [
        o
        for o in production
        if o["metadata"].get("labels", {}).get("app.kubernetes.io/component")
        in ("config", "migration")
    ]
    assert sorted(o["kind"] for o in first) == ["ConfigMap", "ConfigMap", "Job"]
    (job,) = [o for o in first if o["kind"] == "Job"]
    (container,) = pod_spec(job)["containers"]
    assert container["args"] == ["migrate"]
    assert environment(first, container)["FAAS_DATABASE_URL"]["valueFrom"]


def test_secrets_are_only_referenced(objects: list[Object]) -> None:
    example = yaml.safe_load((DEPLOY / "secret.example.yaml").read_text())
    assert [o for o in objects if o["kind"] == "Secret"] == []
    for name, _, container in containers(objects):
        for entry in container.get("env", []):
            reference = entry.get("valueFrom", {}).get("secretKeyRef")
            if reference is not None:
                assert reference["name"] == SECRET, name
                assert reference["key"] in example["stringData"], (name, reference["key"])


@pytest.mark.usefixtures("no_faas_environment")
def test_the_single_overlay_is_one_pod_running_faas_up() -> None:
    objects = render("single")
    assert sorted(o["kind"] for o in objects) == [
        "ConfigMap",
        "Deployment",
        "PersistentVolumeClaim",
        "Service",
    ]
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 1
    (container,) = pod_spec(deployment)["containers"]
    assert container["args"] == ["up"]
    env = {
        k.removeprefix("FAAS_").lower(): v["value"]
        for k, v in environment(objects, container).items()
    }
    assert load_settings(**env).env == "development"
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    assert "persistentVolumeClaim" in volumes["data"]


def test_the_gateway_loads_its_routing_file(production: list[Object], tmp_path: Path) -> None:
    gateway = of_kind(production, "Deployment")["faas-gateway"]
    container = container_of(production, "faas-gateway")
    path = Path(environment(production, container)["FAAS_GATEWAY_MODELS"]["value"])
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    (volume,) = [v for v in pod_spec(gateway)["volumes"] if v["name"] == mount["name"]]
    data = of_kind(production, "ConfigMap")[volume["configMap"]["name"]]["data"]
    (tmp_path / path.name).write_text(data[path.name])
    table = load_routing(tmp_path / path.name)
    assert {model.name for model in table.models} >= {"chat-default", "embed-default"}
