"""The tuneloop chart: lint, render every scenario, validate every manifest, check the contract."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections import defaultdict
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support.helm_chart import (
    CHART,
    DEFAULT_SETS,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    render,
    run_helm,
)  # fmt: skip

pytestmark = pytest.mark.integration

ALL = ["default", *SCENARIOS]
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
K8S_VERSIONS = ["1.26", kubernetes_validate.utils.latest_version()]
FULL = f"{RELEASE}-tuneloop"
ABBREVIATIONS = {
    "pdb": "poddisruptionbudget",
    "hpa": "horizontalpodautoscaler",
    "pvc": "persistentvolumeclaim",
}

SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object",
                    "properties": {"matchLabels": {"type": "object"}},
                    "additionalProperties": False,
                },
                "namespaceSelector": {
                    "type": "object",
                    "properties": {"matchNames": {"type": "array", "items": {"type": "string"}}},
                    "additionalProperties": False,
                },
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                            "authorization": {
                                "type": "object",
                                "required": ["type", "credentials"],
                                "additionalProperties": False,
                                "properties": {
                                    "type": {"const": "Bearer"},
                                    "credentials": {
                                        "type": "object",
                                        "required": ["name", "key"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "name": {"type": "string"},
                                            "key": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string"},
                            "rules": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["alert", "expr", "labels", "annotations"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "alert": {"type": "string", "pattern": "^[A-Za-z]+$"},
                                        "expr": {"type": "string"},
                                        "for": {"type": "string", "pattern": "^[0-9]+[smh]$"},
                                        "labels": {
                                            "type": "object",
                                            "required": ["severity"],
                                        },
                                        "annotations": {
                                            "type": "object",
                                            "required": ["summary", "description"],
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def objects(rendered, scenario: str, kind: str | None = None) -> list[dict]:
    return [doc for _, doc in rendered[scenario] if kind is None or doc["kind"] == kind]


def one(rendered, scenario: str, kind: str, name: str) -> dict:
    (obj,) = [o for o in objects(rendered, scenario, kind) if o["metadata"]["name"] == name]
    return obj


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def engines(rendered, scenario: str) -> list[dict]:
    return [
        d for d in objects(rendered, scenario, "Deployment") if "-engine-" in d["metadata"]["name"]
    ]


def values_of(scenario: str) -> dict:
    """values.yaml merged with the scenario's file (the defaults: with DEFAULT_SETS' S3 URL)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if scenario == "default":
        return _merge(values, {"artifacts": {"s3": {"url": DEFAULT_SETS[1].partition("=")[2]}}})
    return _merge(values, yaml.safe_load(SCENARIOS[scenario].read_text()))


def test_every_scenario_the_issue_asks_for_is_there() -> None:
    assert set(SCENARIOS) == {
        "minimal-cpu-values",
        "gpu-engines-values",
        "external-postgres-s3-values",
        "monitoring-values",
        "kuberay-training-values",
    }


@pytest.mark.parametrize("scenario", ALL)
def test_helm_lint_strict(helm: str, scenario: str) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    args += list(DEFAULT_SETS) if scenario == "default" else ["-f", str(SCENARIOS[scenario])]
    result = run_helm(helm, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("scenario", ALL)
def test_every_manifest_passes_kubernetes_validate_strict(rendered, scenario: str) -> None:
    seen = 0
    for source, doc in rendered[scenario]:
        if doc["kind"] in CRD_KINDS:
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(
                    f"{source} {doc['kind']}/{doc['metadata']['name']} (k8s {version}): "
                    f"{exc.message} at {list(exc.absolute_path)}"
                )
        seen += 1
    assert seen >= 10


@pytest.mark.parametrize("scenario", ALL)
def test_crd_objects_have_the_operator_structure(rendered, scenario: str) -> None:
    for doc in objects(rendered, scenario, "ServiceMonitor"):
        jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
    for doc in objects(rendered, scenario, "PrometheusRule"):
        jsonschema.validate(doc, PROMETHEUS_RULE_SCHEMA)


@pytest.mark.parametrize("scenario", ALL)
def test_one_template_per_object_kind_and_component(rendered, scenario: str) -> None:
    kinds = defaultdict(set)
    for source, doc in rendered[scenario]:
        kinds[source].add(doc["kind"])
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/component"]
    for source, found in kinds.items():
        assert len(found) == 1, f"{source} renders {found}"
        prefix = source.removesuffix(".yaml").split("-")[0]
        assert ABBREVIATIONS.get(prefix, prefix) == next(iter(found)).lower(), source


@pytest.mark.parametrize("scenario", ALL)
def test_pods_reference_only_what_exists(rendered, scenario: str) -> None:
    """Volumes mounted are declared; ConfigMaps, Secrets, PVCs and ServiceAccounts used exist."""
    existing = {
        kind: {o["metadata"]["name"] for o in objects(rendered, scenario, kind)}
        for kind in ("ConfigMap", "Secret", "PersistentVolumeClaim", "ServiceAccount")
    }
    values = values_of(scenario)
    # Objects a scenario says the user created beforehand.
    existing["Secret"] |= {
        values["database"]["external"]["existingSecret"],
        values["adminKey"]["existingSecret"],
        values["engineKey"]["existingSecret"],
        values["artifacts"]["s3"]["existingSecret"],
    }
    existing["PersistentVolumeClaim"] |= {
        values["baseModel"]["pvc"]["existingClaim"],
        values["artifacts"]["pvc"]["existingClaim"],
    }
    for workload in objects(rendered, scenario):
        if workload["kind"] not in ("Deployment", "StatefulSet"):
            continue
        pod = workload["spec"]["template"]["spec"]
        claims = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"] + pod.get("initContainers", []):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claims, mount
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in existing["ConfigMap"]
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in existing["Secret"], (workload["metadata"]["name"], ref)
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert claim in existing["PersistentVolumeClaim"], claim
        if "serviceAccountName" in pod:
            assert pod["serviceAccountName"] in existing["ServiceAccount"]


@pytest.mark.parametrize("scenario", ALL)
def test_services_select_pods_and_gateway_knows_every_engine(rendered, scenario: str) -> None:
    pods = [
        (w["spec"]["template"]["metadata"]["labels"], w["spec"]["template"]["spec"])
        for w in objects(rendered, scenario)
        if w["kind"] in ("Deployment", "StatefulSet")
    ]
    for svc in objects(rendered, scenario, "Service"):
        selector = svc["spec"]["selector"]
        matches = [spec for labels, spec in pods if selector.items() <= labels.items()]
        assert len(matches) == 1, svc["metadata"]["name"]
        ports = {p["name"] for c in matches[0]["containers"] for p in c.get("ports", [])}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports
    settings = one(rendered, scenario, "ConfigMap", f"{FULL}-settings")["data"]
    engine_services = {
        s["metadata"]["name"]
        for s in objects(rendered, scenario, "Service")
        if s["metadata"]["labels"]["app.kubernetes.io/component"] == "engine"
    }
    urls = settings["TUNELOOP_ENGINE_URLS"].split(",")
    assert {re.fullmatch(r"http://([a-z0-9-]+):8000", u).group(1) for u in urls} == engine_services
    engines = [
        d for d in objects(rendered, scenario, "Deployment") if "-engine-" in d["metadata"]["name"]
    ]
    assert len(engines) == len(urls)


@pytest.mark.parametrize("scenario", ALL)
def test_gateway_and_monitor_follow_the_process_contract(rendered, scenario: str) -> None:
    settings = one(rendered, scenario, "ConfigMap", f"{FULL}-settings")["data"]
    gateway = one(rendered, scenario, "Deployment", f"{FULL}-gateway")
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["tuneloop", "serve"]
    env = set(settings) | set(env_of(container))
    for name in (
        "TUNELOOP_ENGINE_URLS", "TUNELOOP_HOST", "TUNELOOP_PORT", "TUNELOOP_DATABASE_URL",
        "TUNELOOP_ARTIFACTS_URL", "TUNELOOP_ADMIN_KEY", "TUNELOOP_BASE_MODEL",
        "TUNELOOP_BASE_MODEL_NAME", "TUNELOOP_MAX_LORAS", "TUNELOOP_MAX_CPU_LORAS",
        "TUNELOOP_MAX_LORA_RANK", "TUNELOOP_MAX_MODEL_LEN", "TUNELOOP_TRAINING_RUNNER",
    ):  # fmt: skip
        assert name in env, name
    assert settings["TUNELOOP_HOST"] == "0.0.0.0" and settings["TUNELOOP_PORT"] == "8000"
    assert "valueFrom" in env_of(container)["TUNELOOP_ADMIN_KEY"]  # never a literal
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    url = settings["TUNELOOP_ARTIFACTS_URL"]
    assert url.startswith(("s3://", "/"))

    monitor = one(rendered, scenario, "Deployment", f"{FULL}-monitor")
    assert monitor["spec"]["replicas"] == 1
    assert monitor["spec"]["strategy"] == {"type": "Recreate"}
    (mon,) = monitor["spec"]["template"]["spec"]["containers"]
    assert mon["command"] == ["tuneloop", "monitor"]
    assert mon["ports"][0]["containerPort"] == int(settings["TUNELOOP_MONITOR_METRICS_PORT"])


@pytest.mark.parametrize("scenario", ALL)
def test_engines_run_tuneloop_engine_with_the_shared_settings(rendered, scenario: str) -> None:
    """The engine host is `tuneloop engine` (vLLM behind tuneloop's middleware), configured by the
    same TUNELOOP_* values the gateways read, with its adapter cache in an emptyDir."""
    settings = one(rendered, scenario, "ConfigMap", f"{FULL}-settings")["data"]
    values = values_of(scenario)
    found = engines(rendered, scenario)
    assert found
    for engine in found:
        pod = engine["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        port = str(values["engine"]["port"])
        assert container["command"] == ["tuneloop", "engine", "--host", "0.0.0.0", "--port", port]
        assert "args" not in container
        assert not container["image"].startswith("vllm/")  # the middleware is tuneloop code
        env = env_of(container)
        for name in (
            "TUNELOOP_BASE_MODEL", "TUNELOOP_BASE_MODEL_NAME", "TUNELOOP_MAX_LORAS",
            "TUNELOOP_MAX_CPU_LORAS", "TUNELOOP_MAX_LORA_RANK", "TUNELOOP_MAX_MODEL_LEN",
            "TUNELOOP_ARTIFACTS_URL", "TUNELOOP_DATA_DIR",
        ):  # fmt: skip
            assert env[name]["value"] == settings[name], name
        for name in ("AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
            assert env.get(name, {}).get("value") == settings.get(name), name
        assert env["TUNELOOP_ENGINE_MEMORY_FRACTION"]["value"] == str(
            values["engine"]["gpuMemoryUtilization"]
        )
        kv = values["engine"]["kvCacheBytes"]
        # Empty lets the memory fraction size the KV cache (GPUs).
        assert env["TUNELOOP_ENGINE_KV_CACHE_BYTES"]["value"] == (str(kv) if kv else "")
        assert int(env["TUNELOOP_ENGINE_ADAPTER_CACHE_ENTRIES"]["value"]) >= int(
            settings["TUNELOOP_MAX_CPU_LORAS"]
        )
        extra = env.get("TUNELOOP_ENGINE_EXTRA_ARGS", {}).get("value", "")
        assert shlex.split(extra) == values["engine"]["extraArgs"]
        assert env["TUNELOOP_ENGINE_DTYPE"]["value"] == values["engine"].get("dtype", "auto")
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert volumes[mounts[env["TUNELOOP_DATA_DIR"]["value"]]]["emptyDir"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["path"] == "/health"  # open without the key
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


def test_engine_extra_args_survive_shell_quoting(helm: str) -> None:
    args = ["--chat-template", "it's {{ x }}", '{"a": "b c"}']
    docs = render(helm, None, "--set-json", f"engine.extraArgs={json.dumps(args)}")
    (engine,) = [
        d
        for _, d in docs
        if d["kind"] == "Deployment" and d["metadata"]["name"] == f"{FULL}-engine-0"
    ]
    env = env_of(engine["spec"]["template"]["spec"]["containers"][0])
    assert shlex.split(env["TUNELOOP_ENGINE_EXTRA_ARGS"]["value"]) == args


@pytest.mark.parametrize("scenario", ALL)
def test_engine_key_secret_reaches_engines_gateways_and_monitor(rendered, scenario: str) -> None:
    values = values_of(scenario)["engineKey"]
    expected = (
        {"name": values["existingSecret"], "key": values["existingSecretKey"]}
        if values["existingSecret"]
        else {"name": f"{FULL}-engine-key", "key": "engine-key"}
    )
    if not values["existingSecret"]:
        secret = one(rendered, scenario, "Secret", f"{FULL}-engine-key")
        assert len(secret["data"]["engine-key"]) > 20
    names = [e["metadata"]["name"] for e in engines(rendered, scenario)]
    for name in [*names, f"{FULL}-gateway", f"{FULL}-monitor"]:
        workload = one(rendered, scenario, "Deployment", name)
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        key = env_of(container)["TUNELOOP_ENGINE_API_KEY"]
        assert key == {"name": "TUNELOOP_ENGINE_API_KEY", "valueFrom": {"secretKeyRef": expected}}


@pytest.mark.parametrize("scenario", ALL)
def test_engines_run_as_non_root_and_never_write_the_artifact_store(
    rendered, scenario: str
) -> None:
    artifacts = values_of(scenario)["artifacts"]
    for engine in engines(rendered, scenario):
        pod = engine["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        claims = {
            v["name"]: v["persistentVolumeClaim"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        }
        artifact_mounts = [m for m in container["volumeMounts"] if m["name"] == "artifacts"]
        if artifacts["type"] == "s3":
            # Engines fetch adapter versions from S3 by content hash: no artifacts volume.
            assert "artifacts" not in claims and not artifact_mounts
        else:
            # A store on a PVC is read in place, never written.
            assert claims["artifacts"]["readOnly"] is True
            assert [m["readOnly"] for m in artifact_mounts] == [True]


def test_gpu_scenario_asks_for_gpus_and_tolerates_gpu_nodes(rendered) -> None:
    gpu_engines = engines(rendered, "gpu-engines-values")
    assert len(gpu_engines) == 3
    for engine in gpu_engines:
        pod = engine["spec"]["template"]["spec"]
        resources = pod["containers"][0]["resources"]
        assert resources["limits"]["nvidia.com/gpu"] == 1
        assert resources["requests"]["nvidia.com/gpu"] == 1
        assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert engine["spec"]["strategy"]["type"] == "Recreate"
        assert pod["volumes"][0]["persistentVolumeClaim"] == {
            "claimName": "llama-3-1-8b",
            "readOnly": True,
        }
    cpu_engine = one(rendered, "minimal-cpu-values", "Deployment", f"{FULL}-engine-0")
    assert "nvidia.com/gpu" not in json.dumps(cpu_engine)


def test_kuberay_rbac_is_namespaced_and_minimal(rendered) -> None:
    scenario = "kuberay-training-values"
    role = one(rendered, scenario, "Role", f"{FULL}-kuberay")
    assert role["metadata"]["namespace"] == "tuneloop-training"
    assert role["rules"] == [
        {
            "apiGroups": ["ray.io"],
            "resources": ["rayjobs"],
            "verbs": ["create", "get", "list", "watch", "delete"],
        },
        {"apiGroups": ["ray.io"], "resources": ["rayjobs/status"], "verbs": ["get"]},
    ]
    binding = one(rendered, scenario, "RoleBinding", f"{FULL}-kuberay")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": FULL, "namespace": NAMESPACE}]
    assert not objects(rendered, scenario, "ClusterRole")
    settings = one(rendered, scenario, "ConfigMap", f"{FULL}-settings")["data"]
    assert settings["TUNELOOP_TRAINING_RUNNER"] == "kuberay"
    assert settings["TUNELOOP_KUBERAY_NAMESPACE"] == "tuneloop-training"
    assert settings["TUNELOOP_KUBERAY_IMAGE"] == "ghcr.io/tuneloop/tuneloop-training:0.1.0-gpu"
    gateway = one(rendered, scenario, "Deployment", f"{FULL}-gateway")
    assert gateway["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    # Without KubeRay there is no Role and no API token in the pods.
    assert not objects(rendered, "default", "Role")
    gateway = one(rendered, "default", "Deployment", f"{FULL}-gateway")
    assert gateway["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


# Settings that must reach RayJob pods only by Secret reference, never through the ConfigMap.
SECRET_SETTINGS = (
    "TUNELOOP_DATABASE_URL", "TUNELOOP_ADMIN_KEY", "TUNELOOP_ENGINE_API_KEY",
    "TUNELOOP_METRICS_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "POSTGRES_PASSWORD",
)  # fmt: skip


def _named(docs: list[tuple[str, dict]], kind: str, name: str) -> dict:
    (obj,) = [d for _, d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return obj


def _settings_of(docs: list[tuple[str, dict]]) -> dict[str, str]:
    return _named(docs, "ConfigMap", f"{FULL}-settings")["data"]


def test_kuberay_pods_get_the_settings_configmap_and_the_s3_secret(helm: str, rendered) -> None:
    from services.settings import load_settings

    scenario = SCENARIOS["kuberay-training-values"]
    docs = render(
        helm, scenario,
        "--set", "artifacts.s3.accessKeyId=AKIA-chart",
        "--set", "artifacts.s3.secretAccessKey=sk-chart",
    )  # fmt: skip
    settings = _settings_of(docs)
    assert settings["TUNELOOP_KUBERAY_ENV_FROM"] == f"configmap:{FULL}-settings,secret:{FULL}-s3"
    # The gateway (and the monitor) read it from the ConfigMap they mount; both objects exist.
    for name in ("gateway", "monitor"):
        deployment = _named(docs, "Deployment", f"{FULL}-{name}")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert {"configMapRef": {"name": f"{FULL}-settings"}} in container["envFrom"]
    secret = _named(docs, "Secret", f"{FULL}-s3")
    assert set(secret["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    # What the pods get by envFrom holds no secret: those stay in Secrets.
    assert not set(SECRET_SETTINGS) & set(settings)
    assert not {"AKIA-chart", "sk-chart"} & set(settings.values())
    # The rendered settings are valid tuneloop settings, and say what the runner needs.
    parsed = load_settings({k: v for k, v in settings.items() if k.startswith("TUNELOOP_")})
    assert parsed.kuberay_env_sources == [
        ("configmap", f"{FULL}-settings"),
        ("secret", f"{FULL}-s3"),
    ]
    kuberay = values_of("kuberay-training-values")["training"]["kuberay"]
    assert parsed.kuberay_worker_node_selector == kuberay["workerNodeSelector"] == {
        "nvidia.com/gpu.present": "true"
    }
    assert parsed.kuberay_worker_tolerations == kuberay["workerTolerations"]
    assert json.loads(settings["TUNELOOP_KUBERAY_WORKER_TOLERATIONS"])[0]["key"] == "nvidia.com/gpu"

    existing = _settings_of(render(helm, scenario, "--set", "artifacts.s3.existingSecret=my-s3"))
    assert existing["TUNELOOP_KUBERAY_ENV_FROM"] == f"configmap:{FULL}-settings,secret:my-s3"
    assert "TUNELOOP_KUBERAY_MODEL_CLAIM" not in existing  # the default model: imported in the pod
    # A model on a PVC: RayJob pods mount that claim where the engines do, and read the same path.
    pvc = _settings_of(render(helm, scenario, "--set", "baseModel.source=pvc"))
    assert pvc["TUNELOOP_KUBERAY_MODEL_CLAIM"] == f"{FULL}-model"
    assert pvc["TUNELOOP_BASE_MODEL"].startswith(pvc["TUNELOOP_KUBERAY_MODEL_MOUNT_PATH"] + "/")
    assert load_settings(pvc).kuberay_model_claim == f"{FULL}-model"
    # IRSA (no keys, no Secret): the ConfigMap only; no KubeRay settings without KubeRay.
    irsa = one(rendered, "kuberay-training-values", "ConfigMap", f"{FULL}-settings")["data"]
    assert irsa["TUNELOOP_KUBERAY_ENV_FROM"] == f"configmap:{FULL}-settings"
    for other in ALL:
        data = one(rendered, other, "ConfigMap", f"{FULL}-settings")["data"]
        assert not set(SECRET_SETTINGS) & set(data), other
        if other != "kuberay-training-values":
            assert not [k for k in data if k.startswith("TUNELOOP_KUBERAY_")], other


def test_kuberay_worker_scheduling_is_left_out_when_unset(helm: str) -> None:
    docs = render(
        helm, SCENARIOS["kuberay-training-values"],
        "--set", "training.kuberay.workerNodeSelector=null",
        "--set", "training.kuberay.workerTolerations=null",
    )  # fmt: skip
    settings = _settings_of(docs)
    assert "TUNELOOP_KUBERAY_WORKER_NODE_SELECTOR" not in settings
    assert "TUNELOOP_KUBERAY_WORKER_TOLERATIONS" not in settings


def test_external_state_scenario_uses_secrets_and_no_bundled_database(rendered) -> None:
    scenario = "external-postgres-s3-values"
    assert not objects(rendered, scenario, "StatefulSet")
    gateway = one(rendered, scenario, "Deployment", f"{FULL}-gateway")
    env = env_of(gateway["spec"]["template"]["spec"]["containers"][0])
    assert env["TUNELOOP_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "tuneloop-db",
        "key": "url",
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == f"{FULL}-s3"
    settings = one(rendered, scenario, "ConfigMap", f"{FULL}-settings")["data"]
    assert settings["TUNELOOP_ARTIFACTS_URL"] == "s3://tuneloop-artifacts/prod"
    assert settings["AWS_ENDPOINT_URL"] == "http://minio.storage.svc:9000"


def test_bundled_database_url_and_password_come_from_one_secret(rendered) -> None:
    gateway = one(rendered, "minimal-cpu-values", "Deployment", f"{FULL}-gateway")
    env = env_of(gateway["spec"]["template"]["spec"]["containers"][0])
    names = [e["name"] for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]]
    # $(POSTGRES_PASSWORD) expands only when the variable is defined earlier in the list.
    assert names.index("POSTGRES_PASSWORD") < names.index("TUNELOOP_DATABASE_URL")
    assert env["TUNELOOP_DATABASE_URL"]["value"] == (
        f"postgresql+psycopg://tuneloop:$(POSTGRES_PASSWORD)@{FULL}-postgresql:5432/tuneloop"
    )
    db = one(rendered, "minimal-cpu-values", "StatefulSet", f"{FULL}-postgresql")
    pg_env = env_of(db["spec"]["template"]["spec"]["containers"][0])
    assert pg_env["POSTGRES_PASSWORD"]["valueFrom"] == env["POSTGRES_PASSWORD"]["valueFrom"]


def test_service_monitor_scrapes_every_metrics_service(rendered) -> None:
    scenario = "monitoring-values"
    (monitor,) = objects(rendered, scenario, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    scraped = set()
    for svc in objects(rendered, scenario, "Service"):
        if selector.items() <= svc["metadata"]["labels"].items():
            assert {p["name"] for p in svc["spec"]["ports"]} & ports
            scraped.add(svc["metadata"]["labels"]["app.kubernetes.io/component"])
    assert scraped == {"gateway", "engine", "monitor"}
    # Engines guard /metrics with the engine key.
    (engine_endpoint,) = [e for e in monitor["spec"]["endpoints"] if e["port"] == "http"]
    assert engine_endpoint["authorization"]["credentials"] == {
        "name": f"{FULL}-engine-key",
        "key": "engine-key",
    }
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_network_policies_select_the_pods_they_protect(rendered) -> None:
    scenario = "monitoring-values"
    policies = objects(rendered, scenario, "NetworkPolicy")
    assert {p["metadata"]["name"].removeprefix(f"{FULL}-") for p in policies} == {
        "engine", "gateway", "monitor", "postgresql",
    }  # fmt: skip
    pod_labels = [
        w["spec"]["template"]["metadata"]["labels"]
        for w in objects(rendered, scenario)
        if w["kind"] in ("Deployment", "StatefulSet")
    ]
    for policy in policies:
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert any(selector.items() <= labels.items() for labels in pod_labels)


@pytest.mark.parametrize("scenario", ALL)
def test_network_policies_are_on_and_engines_admit_only_tuneloop_pods(
    rendered, scenario: str
) -> None:
    policies = {
        p["metadata"]["name"].removeprefix(f"{FULL}-"): p
        for p in objects(rendered, scenario, "NetworkPolicy")
    }
    assert {"engine", "gateway", "monitor"} <= set(policies)
    (rule,) = policies["engine"]["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    metrics_from = values_of(scenario)["networkPolicy"]["metricsFrom"]
    peers = [p for p in rule["from"] if p not in metrics_from]
    components = {"app.kubernetes.io/instance": RELEASE}
    assert peers[0] == {
        "podSelector": {
            "matchLabels": components,
            "matchExpressions": [
                {
                    "key": "app.kubernetes.io/component",
                    "operator": "In",
                    "values": ["gateway", "monitor"],
                }
            ],
        }
    }
    # Training pods the KubeRay runner starts (in its namespace when that differs).
    assert peers[1]["podSelector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "tuneloop"}}
    namespace = values_of(scenario)["training"]["kuberay"]["namespace"]
    if namespace and namespace != NAMESPACE:
        assert peers[1]["namespaceSelector"] == {
            "matchLabels": {"kubernetes.io/metadata.name": namespace}
        }
    assert len(peers) == 2  # nobody else, and never an empty (allow-all) peer


def _pods_of(rendered, scenario: str, workload: dict) -> int:
    """Most pods a Deployment runs: its replicas, or its HPA's maximum."""
    if "replicas" in workload["spec"]:
        return workload["spec"]["replicas"]
    (hpa,) = [
        h
        for h in objects(rendered, scenario, "HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["name"] == workload["metadata"]["name"]
    ]
    return hpa["spec"]["maxReplicas"]


@pytest.mark.parametrize("scenario", ALL)
def test_no_read_write_once_volume_is_mounted_by_more_than_one_pod(rendered, scenario: str) -> None:
    single_node = {"ReadWriteOnce", "ReadWriteOncePod"}
    pods_per_claim: dict[str, int] = defaultdict(int)
    for workload in objects(rendered, scenario, "Deployment"):
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                pods_per_claim[claim] += _pods_of(rendered, scenario, workload)
    for pvc in objects(rendered, scenario, "PersistentVolumeClaim"):
        name, modes = pvc["metadata"]["name"], set(pvc["spec"]["accessModes"])
        if modes <= single_node:
            assert pods_per_claim[name] <= 1, (
                f"{name} is {sorted(modes)} but {pods_per_claim[name]} pods mount it"
            )
    artifacts = values_of(scenario)["artifacts"]
    if artifacts["type"] == "pvc" and not artifacts["pvc"]["existingClaim"]:
        pvc = one(rendered, scenario, "PersistentVolumeClaim", f"{FULL}-artifacts")
        assert "ReadWriteMany" in pvc["spec"]["accessModes"]
        assert pods_per_claim[f"{FULL}-artifacts"] > 1


def test_artifacts_default_to_s3_and_the_defaults_name_the_missing_url(helm: str) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["artifacts"]["type"] == "s3"
    assert values["networkPolicy"]["enabled"] is True
    result = run_helm(helm, "template", RELEASE, str(CHART))
    assert result.returncode != 0
    assert "artifacts.s3.url" in result.stderr and "artifacts.type=pvc" in result.stderr


def test_dashboard_is_valid_grafana_json(rendered) -> None:
    cm = one(rendered, "monitoring-values", "ConfigMap", f"{FULL}-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["tuneloop.json"])
    assert dashboard["uid"] == "tuneloop-overview"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for metric in (
        "tuneloop_engine_up", "tuneloop_requests_total", "tuneloop_drift_alarm",
        "tuneloop_retrain_jobs_total", "tuneloop_request_seconds_bucket",
    ):  # fmt: skip
        assert any(metric in e for e in exprs), metric
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--set", "engine.gpus=-1"], "engine.gpus"),
        (["--set", "artifacts.type=gcs"], "artifacts.type"),
        (["--set", "engine.gpu=1"], "gpu"),  # a typo is not silently ignored
        (["--set", "training.runner=slurm"], "training.runner"),
        (["--set", "lora.maxLoraRank=7"], "maxLoraRank"),
        (["--set-string", "gateway.replicas=two"], "gateway.replicas"),
        (["--set", "database.external.url=mysql://x/y"], "database.external.url"),
        (["--set", "gateway.bodyLimits.requestBytes=0"], "gateway.bodyLimits.requestBytes"),
    ],
)
def test_values_schema_rejects_bad_values(helm: str, flags: list[str], message: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), *flags)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--set", "lora.maxLoras=16", "--set", "lora.maxCpuLoras=8"], "must be >= lora.maxLoras"),
        (["--set", "database.type=external"], "database.external.url"),
        (["--set", "artifacts.s3.url="], "artifacts.s3.url"),
        (["--set", "training.runner=ray"], "training.rayAddress"),
        (["--set", "baseModel.source=image"], "baseModel.image.repository"),
        (
            ["--set", "artifacts.type=pvc", "--set", "artifacts.pvc.accessModes={ReadWriteOnce}"],
            "must be ReadWriteMany",
        ),
        (
            ["--set", "baseModel.source=pvc", "--set", "baseModel.pvc.accessModes={ReadWriteOnce}"],
            "must be ReadOnlyMany or ReadWriteMany",
        ),
        (["--set", "engine.adapterCacheEntries=4"], "must be >= lora.maxCpuLoras"),
        (["--set", "extraSettings.MAX_UPLOAD_BYTES=5"], "set gateway.bodyLimits.uploadBytes"),
    ],
)
def test_cross_field_rules_say_what_to_set(helm: str, flags: list[str], message: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), *DEFAULT_SETS, *flags)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_generated_secrets_render_and_explicit_ones_win(helm: str) -> None:
    docs = render(
        helm, None, "--set", "adminKey.value=sk-admin-123", "--set", "engineKey.value=ek-123"
    )
    (secret,) = [d for _, d in docs if d["metadata"]["name"] == f"{FULL}-admin-key"]
    assert secret["data"]["admin-key"] == "c2stYWRtaW4tMTIz"  # base64 of sk-admin-123
    (engine_key,) = [d for _, d in docs if d["metadata"]["name"] == f"{FULL}-engine-key"]
    assert engine_key["data"]["engine-key"] == "ZWstMTIz"  # base64 of ek-123
    (pg,) = [
        d
        for _, d in docs
        if d["metadata"]["name"] == f"{FULL}-postgresql" and d["kind"] == "Secret"
    ]
    assert len(pg["data"]["password"]) > 20


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = (
            _merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


def test_schema_covers_every_values_key_and_every_key_is_documented() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    text = (CHART / "values.yaml").read_text()
    lines = text.splitlines()
    undocumented, unschemed = [], []

    def walk(node: yaml.MappingNode, props: dict | None, path: str) -> None:
        for key_node, value_node in node.value:
            key = key_node.value
            here = f"{path}.{key}".lstrip(".")
            above = lines[key_node.start_mark.line - 1 :: -1]
            block = []
            for line in above:
                if not line.strip().startswith("#"):
                    break
                block.append(line.strip())
            if not any(b.startswith("# --") for b in block):
                undocumented.append(here)
            sub = (props or {}).get(key)
            if props is not None and sub is None:
                unschemed.append(here)
                continue
            # Shared definitions ($ref: resources) are Kubernetes types: documented once, not walked.
            if isinstance(value_node, yaml.MappingNode) and sub and "properties" in sub:
                walk(value_node, sub["properties"], here)

    walk(yaml.compose(text), schema["properties"], "")
    assert not undocumented, f"values keys without a `# --` comment: {undocumented}"
    assert not unschemed, f"values keys missing from values.schema.json: {unschemed}"


def test_notes_render(helm: str, tmp_path: Path) -> None:
    # `helm install --dry-run` needs a cluster; render NOTES.txt through a ConfigMap instead.
    chart = tmp_path / "tuneloop"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.tpl")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        '  notes: {{ tpl (.Files.Get "notes.tpl") . | toJson }}\n'
    )
    result = run_helm(
        helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE,
        "--show-only", "templates/zz-notes.yaml", "-f", str(SCENARIOS["kuberay-training-values"]),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    notes = yaml.safe_load(result.stdout)["data"]["notes"]
    assert "kubectl -n tl port-forward svc/rel-tuneloop-gateway" in notes
    assert "export ADMIN_KEY=$(kubectl -n tl get secret rel-tuneloop-admin-key" in notes
    assert "helm install kuberay-operator kuberay/kuberay-operator" in notes
    assert "engine key in Secret rel-tuneloop-engine-key" in notes
    # The RayJobs run in another namespace: the objects they read by reference must be copied.
    assert "(TUNELOOP_KUBERAY_ENV_FROM) in namespace tuneloop-training, not tl" in notes
    # No Ingress in the chart: the NOTES say what body size one in front must allow.
    assert 'proxy-body-size: "536936448"' in notes  # the upload limit + 64 KiB of form fields
    assert 'proxy-body-size: "8388608"' in notes


def test_body_limits_default_to_the_gateway_settings_and_reach_every_process(
    helm: str, rendered
) -> None:
    from services.settings import Settings

    limits = yaml.safe_load((CHART / "values.yaml").read_text())["gateway"]["bodyLimits"]
    defaults = [Settings.model_fields[f"max_{kind}_bytes"].default
                for kind in ("request", "upload", "adapter")]
    assert [limits["requestBytes"], limits["uploadBytes"], limits["adapterBytes"]] == defaults
    for scenario, docs in rendered.items():
        (settings,) = [d for f, d in docs if f == "configmap-settings.yaml"]
        assert settings["data"]["TUNELOOP_MAX_REQUEST_BYTES"] == str(limits["requestBytes"]), scenario
        assert settings["data"]["TUNELOOP_MAX_UPLOAD_BYTES"] == str(limits["uploadBytes"]), scenario
    docs = render(helm, None, "--set", "gateway.bodyLimits.uploadBytes=2147483648")
    (settings,) = [d for f, d in docs if f == "configmap-settings.yaml"]
    assert settings["data"]["TUNELOOP_MAX_UPLOAD_BYTES"] == "2147483648"  # no float notation


def test_install_helm_script_is_idempotent_and_fast() -> None:
    import subprocess
    import time

    script = Path(__file__).resolve().parents[2] / "scripts" / "install-helm.sh"
    start = time.monotonic()
    result = subprocess.run(
        ["bash", str(script)], check=False, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    again = time.monotonic()
    result = subprocess.run(
        ["bash", str(script)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == ""
    assert time.monotonic() - again < 2.0, "a present helm must be a fast no-op"
    assert again - start < 300
