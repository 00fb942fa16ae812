"""deploy/k8s: every overlay renders, validates against pinned schemas, and matches the code.

Each overlay is rendered by ``aigq deploy render`` (kubectl's kustomize; skipped without
kubectl), with the backfill Job template beside it. Every object is validated against the
Kubernetes schemas of :data:`K8S_VERSION` (kubernetes-validate, strict: an unknown field is
an error) and every ScaledObject against the vendored KEDA CRD schema. Then the pods are
checked against the code: every ``AIGQ_*`` variable a container's process reads is provided
by its ConfigMaps or Secret (the classes come from the command's ``load(...)`` calls), probe
paths are routes the process serves, probe ports are its port settings' values, and every
container runs as non-root on a read-only root filesystem with requests and limits.
"""

from __future__ import annotations

import ast
import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from aigq.settings import RedisSettings
from cache.api import ReadAPI
from cache.settings import HintSettings, ServeSettings
from shell import deploy, deploy_config
from shell.cli import app

K8S_VERSION = "1.31.0"  # the pinned Kubernetes API version the objects must validate against
KEDA_SCHEMA = deploy.K8S_DIR / "schemas" / "keda-2.17.3-scaledobject.json"
JOBS = sorted((deploy.K8S_DIR / "jobs").glob("*.yaml"))
ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = deploy.overlays()

Obj = dict[str, Any]

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl")
pytestmark = needs_kubectl


def _load(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request: pytest.FixtureRequest) -> list[Obj]:
    """The overlay's objects and the Job templates."""
    docs = _load(deploy.render(request.param))
    for job in JOBS:
        docs += _load(job.read_text())
    return docs


def _pod_specs(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(object, pod spec) of every workload."""
    for obj in objects:
        spec = obj.get("spec", {})
        if obj["kind"] == "CronJob":
            yield obj, spec["jobTemplate"]["spec"]["template"]["spec"]
        elif obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            yield obj, spec["template"]["spec"]


def _containers(objects: list[Obj]) -> Iterator[tuple[Obj, Obj, Obj]]:
    for obj, pod in _pod_specs(objects):
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield obj, pod, container


def _aigq_containers(objects: list[Obj]) -> Iterator[tuple[Obj, Obj, str]]:
    """(object, container, role) of every container that runs an ``aigq`` subcommand."""
    by_command = {command: role for role, (command, _) in deploy_config.ROLES.items()}
    for obj, _, container in _containers(objects):
        if container.get("command") == ["aigq"]:
            yield obj, container, by_command[container["args"][0]]


def _environment(objects: list[Obj], container: Obj) -> dict[str, str]:
    """What the container's environment holds: its envFrom sources' data and its env."""
    found: dict[str, str] = {}
    sources = {(o["kind"], o["metadata"].get("name")): o for o in objects}
    for source in container.get("envFrom", []):
        kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else (
            "Secret", source["secretRef"]
        )  # fmt: skip
        assert (kind, ref["name"]) in sources, f"{kind} {ref['name']} is not rendered"
        found.update(sources[(kind, ref["name"])].get("data") or {})
    for entry in container.get("env", []):
        found[entry["name"]] = entry.get("value", "")
    return found


def _strict(schema: Obj) -> Obj:
    """A CRD schema with unknown fields forbidden, as the API server's strict validation does."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out


def test_every_overlay_is_found() -> None:
    assert set(OVERLAYS) == {"local", "gpu"}


def test_every_object_validates_against_the_pinned_schemas(objects: list[Obj]) -> None:
    keda = _strict(json.loads(KEDA_SCHEMA.read_text()))
    checked = 0
    for obj in objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            assert obj["kind"] == "ScaledObject"
            jsonschema.validate(obj, keda)
        else:
            assert kubernetes_validate.validate(obj, K8S_VERSION, strict=True) == "1.31"
        checked += 1
    assert checked == len(objects) > 20


def test_the_strict_validation_rejects_an_unknown_field(objects: list[Obj]) -> None:
    deployment = copy.deepcopy(next(o for o in objects if o["kind"] == "Deployment"))
    deployment["spec"]["replicaz"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    scaled = [o for o in objects if o["kind"] == "ScaledObject"]
    keda = _strict(json.loads(KEDA_SCHEMA.read_text()))
    for obj in scaled[:1]:
        wrong = copy.deepcopy(obj)
        wrong["spec"]["minReplicas"] = 1
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, keda)


def test_every_setting_a_container_reads_is_in_its_config(objects: list[Obj]) -> None:
    roles = set()
    for obj, container, role in _aigq_containers(objects):
        roles.add(role)
        env = _environment(objects, container)
        unset = {v.name for v in deploy_config.role_variables(role) if v.value is None}
        for var in deploy_config.role_variables(role):
            where = f"{obj['metadata'].get('name', obj['kind'])}/{container['name']}"
            if var.name in unset:
                assert var.name not in env or env[var.name], f"{where}: {var.name} set empty"
            else:
                assert var.name in env, f"{where} does not get {var.name}"
    assert roles == set(deploy_config.ROLES)


def test_secrets_come_from_the_secret_only(objects: list[Obj]) -> None:
    for obj in objects:
        if obj["kind"] == "ConfigMap":
            for role in deploy_config.ROLES:
                secret = {v.name for v in deploy_config.role_variables(role) if v.secret}
                assert not secret & set(obj.get("data") or {}), obj["metadata"]["name"]


def _faust_pages() -> set[str]:
    """The paths the worker registers with ``@app.page(...)`` (streams/worker.py)."""
    tree = ast.parse((ROOT / "streams" / "worker.py").read_text())
    return {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "page"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }


def _api_paths() -> set[str]:
    api = ReadAPI(HintSettings(), ServeSettings(), RedisSettings())
    return {route.path for route in api.fastapi.routes if hasattr(route, "path")}


def _probes(container: Obj) -> list[Obj]:
    kinds = ("startupProbe", "livenessProbe", "readinessProbe")
    return [container[k] for k in kinds if k in container]


# A process that serves only Prometheus text (aigq.metrics: prometheus_client's server).
METRICS_ONLY = {"/metrics"}


def test_probes_ask_what_the_processes_serve_on_their_ports(objects: list[Obj]) -> None:
    served = {
        "worker": _faust_pages(),
        "api": _api_paths(),
        "generator": METRICS_ONLY,
        "trainer": METRICS_ONLY,
    }
    assert {"/health", "/ready", "/metrics"} <= served["worker"]
    assert {"/healthz", "/readyz", "/metrics"} <= served["api"]
    probed = set()
    for obj, container, role in _aigq_containers(objects):
        if obj["kind"] in ("Job", "CronJob"):
            assert not _probes(container), "a one-off job has no server to probe"
            continue
        env = _environment(objects, container)
        ports = _listening(role, env)
        probes = _probes(container)
        assert probes, f"{role}: no probe"
        for probe in probes:
            assert probe["httpGet"]["path"] in served[role], (role, probe)
            assert probe["httpGet"]["port"] in ports, (role, probe, ports)
        declared = {p["containerPort"] for p in container["ports"]}
        assert ports <= declared
        probed.add(role)
    assert probed == {"worker", "generator", "api", "trainer"}


def _listening(role: str, env: dict[str, str]) -> set[int]:
    """The ports the role's process listens on, read from its settings' ``*port`` values,
    each with its ``*bind`` on every interface (a loopback bind could not be probed)."""
    ports = set()
    for cls in deploy_config.role_settings(role):
        prefix = str(cls.model_config.get("env_prefix", ""))
        for field in cls.model_fields:
            if field == "port" or field.endswith("_port"):
                port = int(env[f"{prefix}{field.upper()}"])
                assert port > 0, f"{prefix}{field.upper()} is off"
                bind = f"{prefix}{field.upper().removesuffix('PORT')}BIND"
                assert env[bind] == "0.0.0.0", bind
                ports.add(port)
    return ports


def test_vllm_serves_what_the_generators_are_told(objects: list[Obj]) -> None:
    vllm = next(c for _, _, c in _containers(objects) if c["name"] == "vllm")
    args = vllm["args"]
    assert "--port=8000" in args and "--host=0.0.0.0" in args and "--enable-lora" in args
    assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"} in vllm["env"]
    for probe in _probes(vllm):
        assert probe["httpGet"] == {"path": "/health", "port": 8000}
    service = next(
        o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "aigq-vllm"
    )
    for _, container, role in _aigq_containers(objects):
        if role == "generator":
            env = _environment(objects, container)
            assert (
                env["AIGQ_GENERATE_BASE_URL"]
                == f"http://aigq-vllm:{service['spec']['ports'][0]['port']}"
            )
            assert f"--served-model-name={env['AIGQ_GENERATE_MODEL']}" in args


def test_every_container_is_locked_down_and_bounded(objects: list[Obj]) -> None:
    count = 0
    for obj, pod, container in _containers(objects):
        where = f"{obj['kind']}/{obj['metadata'].get('name')}/{container['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == 10001, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod.get("automountServiceAccountToken") is False, where
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True, where
        assert ctx["allowPrivilegeEscalation"] is False, where
        assert ctx["runAsNonRoot"] is True, where
        assert ctx["capabilities"] == {"drop": ["ALL"]}, where
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
        assert {"cpu", "memory"} <= set(container["resources"]["limits"]), where
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, f"{where}: /tmp is not writable"
        count += 1
    assert count >= 7


def test_every_command_is_an_aigq_subcommand(objects: list[Obj]) -> None:
    root = get_command(app)
    commands = root.commands  # type: ignore[attr-defined]  # a click Group
    seen = set()
    for _, container, _role in _aigq_containers(objects):
        sub = container["args"][0]
        assert sub in commands, sub
        command = commands[sub]
        rest = container["args"][1:]
        while rest and hasattr(command, "commands"):  # a group (aigq x2q build): its command
            assert rest[0] in command.commands, (sub, rest[0])
            command, rest = command.commands[rest[0]], rest[1:]
        options = {opt for p in command.params for opt in p.opts}
        for arg in rest:
            if arg.startswith("--"):
                assert arg in options, (sub, arg)
        seen.add(sub)
    assert {"worker", "generate", "serve", "trainer", "backfill", "x2q"} <= seen


def test_keda_watches_the_groups_the_processes_join(objects: list[Obj]) -> None:
    scaled = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ScaledObject"}
    targets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    group = {"worker": "AIGQ_STREAM_APP_ID", "generator": "AIGQ_GENERATE_GROUP_ID"}
    for obj, container, role in _aigq_containers(objects):
        name = obj["metadata"].get("name")
        if name not in scaled:
            continue
        env = _environment(objects, container)
        trigger = scaled[name]["spec"]["triggers"][0]["metadata"]
        assert scaled[name]["spec"]["scaleTargetRef"]["name"] in targets
        assert "replicas" not in targets[name]["spec"], "KEDA owns the replica count"
        assert trigger["consumerGroup"] == env[group[role]]
        assert trigger["bootstrapServers"] == env["AIGQ_KAFKA_BOOTSTRAP_SERVERS"]
        if "topic" in trigger:
            assert trigger["topic"] == f"{env['AIGQ_TOPICS_PREFIX']}.regenerate"


def test_the_gpu_overlay_gives_vllm_a_gpu() -> None:
    objects = _load(deploy.render("gpu"))
    vllm = next(c for _, _, c in _containers(objects) if c["name"] == "vllm")
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] == "1"
    local = _load(deploy.render("local"))
    vllm = next(c for _, _, c in _containers(local) if c["name"] == "vllm")
    assert "nvidia.com/gpu" not in vllm["resources"]["limits"]
    assert not [o for o in local if o["kind"] == "ScaledObject"]


def test_deploy_render_prints_the_overlay() -> None:
    result = CliRunner().invoke(app, ["deploy", "render", "--overlay", "local"])
    assert result.exit_code == 0, result.output
    kinds = {doc["kind"] for doc in _load(result.output)}
    assert {"Deployment", "ConfigMap", "Secret", "NetworkPolicy"} <= kinds


def test_an_unknown_overlay_fails_cleanly() -> None:
    result = CliRunner().invoke(app, ["deploy", "render", "--overlay", "nope"])
    assert result.exit_code == 1
    assert "no overlay 'nope'" in result.output
