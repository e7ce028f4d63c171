"""The tuneloop chart: lint, render every scenario, validate every manifest, check the contract."""

from __future__ import annotations

import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support.helm_chart import CHART, NAMESPACE, RELEASE, SCENARIOS, render, run_helm

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
    if scenario != "default":
        args += ["-f", str(SCENARIOS[scenario])]
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
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if scenario != "default":
        overrides = yaml.safe_load(SCENARIOS[scenario].read_text())
        values = _merge(values, overrides)
    # Objects a scenario says the user created beforehand.
    existing["Secret"] |= {
        values["database"]["external"]["existingSecret"],
        values["adminKey"]["existingSecret"],
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
def test_engines_run_vllm_with_lora_flags(rendered, scenario: str) -> None:
    settings = one(rendered, scenario, "ConfigMap", f"{FULL}-settings")["data"]
    for engine in objects(rendered, scenario, "Deployment"):
        if "-engine-" not in engine["metadata"]["name"]:
            continue
        pod = engine["spec"]["template"]["spec"]
        (vllm,) = pod["containers"]
        args = dict(a.removeprefix("--").partition("=")[::2] for a in vllm["args"])
        assert args["model"] == settings["TUNELOOP_BASE_MODEL"]
        assert args["served-model-name"] == settings["TUNELOOP_BASE_MODEL_NAME"]
        assert "enable-lora" in args and "enable-prefix-caching" in args
        assert args["max-loras"] == settings["TUNELOOP_MAX_LORAS"]
        assert args["max-cpu-loras"] == settings["TUNELOOP_MAX_CPU_LORAS"]
        assert args["max-lora-rank"] == settings["TUNELOOP_MAX_LORA_RANK"]
        assert args["max-model-len"] == settings["TUNELOOP_MAX_MODEL_LEN"]
        assert env_of(vllm)["VLLM_ALLOW_RUNTIME_LORA_UPDATING"]["value"] == "True"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert vllm[probe]["httpGet"]["path"] == "/health"
        shm = {v["name"]: v for v in pod["volumes"]}["dshm"]["emptyDir"]
        assert shm["medium"] == "Memory"
        assert {"name": "dshm", "mountPath": "/dev/shm"} in vllm["volumeMounts"]


def test_gpu_scenario_asks_for_gpus_and_tolerates_gpu_nodes(rendered) -> None:
    engines = [
        d for d in objects(rendered, "gpu-engines-values", "Deployment")
        if "-engine-" in d["metadata"]["name"]
    ]  # fmt: skip
    assert len(engines) == 3
    for engine in engines:
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
        (["--set", "artifacts.type=s3"], "artifacts.s3.url"),
        (["--set", "training.runner=ray"], "training.rayAddress"),
        (["--set", "baseModel.source=image"], "baseModel.image.repository"),
    ],
)
def test_cross_field_rules_say_what_to_set(helm: str, flags: list[str], message: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), *flags)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_generated_secrets_render_and_explicit_ones_win(helm: str) -> None:
    docs = render(helm, None, "--set", "adminKey.value=sk-admin-123")
    (secret,) = [d for _, d in docs if d["metadata"]["name"] == f"{FULL}-admin-key"]
    assert secret["data"]["admin-key"] == "c2stYWRtaW4tMTIz"  # base64 of sk-admin-123
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
