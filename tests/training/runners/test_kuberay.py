"""KubeRayRunner with the real ``kubernetes`` client against the kmock API emulator."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import kmock
import kubernetes_validate
import pytest
import yaml

from tests.support.kmock_cluster import RAYJOBS, Cluster
from training.runners.base import JobRunner, RunSpec, RunState
from training.runners.kuberay import (
    GROUP,
    PLURAL,
    VERSION,
    KubeRayError,
    KubeRayRunner,
    map_status,
    rayjob_name,
)

NS = "tuneloop"
SCHEMA = json.loads(
    (Path(__file__).resolve().parents[3] / "training/runners/rayjob_schema.json").read_text()
)
K8S_VERSION = "1.30"

SPEC = RunSpec(
    job_id="ftjob-abc123",
    entrypoint=["python", "-m", "training.recipe", "--job", "ftjob-abc123", "--note", "a b"],
    num_workers=2,
    cpus_per_worker=1.5,
    gpus_per_worker=1,
    memory_per_worker="6Gi",
    env={"TUNELOOP_DATABASE_URL": "postgresql+psycopg://db/tuneloop", "HF_HOME": "/tmp/hf"},
)


def _runner(cluster: Cluster, **kwargs) -> KubeRayRunner:
    kwargs.setdefault("image", "tuneloop/training:test")
    return KubeRayRunner(cluster.api, namespace=NS, **kwargs)


def _get(cluster: Cluster, name: str) -> dict:
    return cluster.api.get_namespaced_custom_object(GROUP, VERSION, NS, PLURAL, name)


def _patch_status(cluster: Cluster, job_id: str, status: dict) -> None:
    # No KubeRay controller runs here: play the operator's part.
    cluster.api.patch_namespaced_custom_object_status(
        GROUP, VERSION, NS, PLURAL, rayjob_name(job_id), {"status": status}
    )


def _status_body(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details or {},
        "code": code,
    }


def assert_valid_rayjob(manifest: dict) -> None:
    """The RayJob matches the schema kept in the repo and its pod templates are valid Pod specs."""
    jsonschema.validate(manifest, SCHEMA)
    cluster = manifest["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]]
    templates += [group["template"] for group in cluster["workerGroupSpecs"]]
    for template in templates:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "x"},
            "spec": template["spec"],
        }
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_runner_implements_the_protocol(cluster: Cluster) -> None:
    runner: JobRunner = _runner(cluster)
    assert callable(runner.submit) and callable(runner.status) and callable(runner.cancel)


@pytest.mark.parametrize(
    "job_id",
    ["ftjob-abc123", "FTJOB_Upper.Case", "x" * 80, "--", "ftjob-" + "a" * 38, "ümlaut/slash"],
)
def test_rayjob_names_are_dns_safe_and_distinct(job_id: str) -> None:
    name = rayjob_name(job_id)
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 47
    assert rayjob_name(job_id) == name
    assert rayjob_name(job_id + "x") != name


def test_plain_job_ids_keep_readable_names() -> None:
    assert rayjob_name("ftjob-abc123") == "tuneloop-ftjob-abc123"


def test_submit_creates_a_valid_rayjob_sized_from_the_spec(cluster: Cluster) -> None:
    _runner(cluster, ttl_seconds_after_finished=600).submit(SPEC)

    job = _get(cluster, "tuneloop-ftjob-abc123")
    assert_valid_rayjob(job)
    meta, spec = job["metadata"], job["spec"]
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "tuneloop"
    assert meta["labels"]["tuneloop.dev/job-id"] == "ftjob-abc123"
    assert meta["annotations"]["tuneloop.dev/job-id"] == "ftjob-abc123"
    assert spec["entrypoint"] == ("python -m training.recipe --job ftjob-abc123 --note 'a b'")
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["ttlSecondsAfterFinished"] == 600
    (workers,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 2
    (container,) = workers["template"]["spec"]["containers"]
    assert container["image"] == "tuneloop/training:test"
    assert container["resources"]["limits"] == {
        "cpu": "1500m",
        "memory": "6Gi",
        "nvidia.com/gpu": 1,
    }
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TUNELOOP_DATABASE_URL"] == "postgresql+psycopg://db/tuneloop"
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {e["name"] for e in head["env"]} == set(SPEC.env)
    # The recorded request is what the runner sent: a POST answered with 201 by the emulator.
    (create,) = list(cluster.emulator[kmock.action.CREATE])
    assert create.data["metadata"]["name"] == "tuneloop-ftjob-abc123"


def test_spec_image_overrides_and_cpu_only_workers_ask_for_no_gpu(cluster: Cluster) -> None:
    spec = RunSpec(job_id="cpu-1", entrypoint=["true"], image="custom:1", cpus_per_worker=2)
    manifest = _runner(cluster, service_account="tuneloop-training").manifest(spec)
    assert_valid_rayjob(manifest)
    worker = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["containers"][0]["image"] == "custom:1"
    assert worker["containers"][0]["resources"]["limits"] == {"cpu": "2"}
    assert worker["serviceAccountName"] == "tuneloop-training"


def test_submit_without_any_image_says_which_setting_to_set(cluster: Cluster) -> None:
    with pytest.raises(KubeRayError, match="TUNELOOP_KUBERAY_IMAGE"):
        _runner(cluster, image=None).submit(SPEC)


def test_status_follows_the_rayjob_through_its_lifecycle(cluster: Cluster) -> None:
    runner = _runner(cluster)
    runner.submit(SPEC)
    assert runner.status(SPEC.job_id).state is RunState.PENDING

    _patch_status(cluster, SPEC.job_id, {"jobDeploymentStatus": "Initializing"})
    status = runner.status(SPEC.job_id)
    assert status.state is RunState.PENDING and "Initializing" in status.message

    _patch_status(cluster, SPEC.job_id, {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"})
    assert runner.status(SPEC.job_id).state is RunState.RUNNING

    _patch_status(
        cluster, SPEC.job_id, {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
    )
    status = runner.status(SPEC.job_id)
    assert status.state is RunState.SUCCEEDED and status.state.is_terminal


@pytest.mark.parametrize(
    ("status", "state", "needle"),
    [
        ({}, RunState.PENDING, "KubeRay operator"),
        ({"jobStatus": "PENDING", "jobDeploymentStatus": "Initializing"}, RunState.PENDING, None),
        ({"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}, RunState.RUNNING, None),
        ({"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete"}, RunState.SUCCEEDED, None),
        (
            {"jobStatus": "FAILED", "jobDeploymentStatus": "Complete", "message": "OOM"},
            RunState.FAILED,
            "OOM",
        ),
        ({"jobStatus": "STOPPED"}, RunState.CANCELLED, "stopped"),
        (
            {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"},
            RunState.FAILED,
            "DeadlineExceeded",
        ),
        (
            {"jobDeploymentStatus": "ValidationFailed", "message": "bad spec"},
            RunState.FAILED,
            "ValidationFailed: bad spec",
        ),
    ],
)
def test_status_mapping(status: dict, state: RunState, needle: str | None) -> None:
    result = map_status({"metadata": {"name": "x"}, "status": status})
    assert result.state is state
    if needle:
        assert needle in result.message


def test_failed_job_reports_the_operator_message(cluster: Cluster) -> None:
    runner = _runner(cluster)
    runner.submit(SPEC)
    _patch_status(
        cluster,
        SPEC.job_id,
        {"jobStatus": "FAILED", "jobDeploymentStatus": "Failed", "message": "worker OOMKilled"},
    )
    status = runner.status(SPEC.job_id)
    assert status.state is RunState.FAILED and "worker OOMKilled" in status.message


def test_retried_submit_is_idempotent(cluster: Cluster) -> None:
    runner = _runner(cluster)
    runner.submit(SPEC)
    _patch_status(cluster, SPEC.job_id, {"jobStatus": "RUNNING"})
    runner.submit(SPEC)  # e.g. the gateway restarted between create and recording it

    assert len(cluster.emulator[kmock.action.CREATE]) == 2
    jobs = cluster.api.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["items"]
    assert [j["metadata"]["name"] for j in jobs] == ["tuneloop-ftjob-abc123"]
    assert runner.status(SPEC.job_id).state is RunState.RUNNING  # the running one was kept


def test_submit_refuses_a_rayjob_of_another_job_under_the_same_name(cluster: Cluster) -> None:
    runner = _runner(cluster)
    runner.submit(SPEC)
    cluster.api.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        NS,
        PLURAL,
        rayjob_name(SPEC.job_id),
        {"metadata": {"annotations": {"tuneloop.dev/job-id": "someone-else"}}},
    )
    with pytest.raises(KubeRayError, match="someone-else"):
        runner.submit(SPEC)


def test_cancel_deletes_the_rayjob_and_tolerates_it_being_gone(cluster: Cluster) -> None:
    runner = _runner(cluster)
    runner.submit(SPEC)
    cluster.install_rayjob_crd()

    runner.cancel(SPEC.job_id)
    assert cluster.api.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["items"] == []
    runner.cancel(SPEC.job_id)  # a second cancel finds nothing: fine
    assert len(cluster.emulator[kmock.action.DELETE]) == 2

    status = runner.status(SPEC.job_id)
    assert status.state is RunState.FAILED and "not found" in status.message


def test_forbidden_names_the_verb_resource_and_the_chart_role(cluster: Cluster) -> None:
    message = (
        'rayjobs.ray.io is forbidden: User "system:serviceaccount:tuneloop:tuneloop" cannot '
        'create resource "rayjobs" in API group "ray.io" in the namespace "tuneloop"'
    )
    cluster.react(
        lambda emu: (
            emu[kmock.action.CREATE, kmock.resource(RAYJOBS)]
            << 403
            << _status_body(403, "Forbidden", message, {"group": "ray.io", "kind": "rayjobs"})
        )
    )
    with pytest.raises(KubeRayError) as caught:
        _runner(cluster).submit(SPEC)
    text = str(caught.value)
    assert "403" in text and "create" in text and "rayjobs" in text and "ray.io" in text
    assert "Role" in text and "tuneloop" in text


def test_forbidden_status_read_is_reported_too(cluster: Cluster) -> None:
    cluster.react(
        lambda emu: (
            emu[kmock.action.FETCH, kmock.resource(RAYJOBS)]
            << 403
            << _status_body(403, "Forbidden", "cannot get resource rayjobs")
        )
    )
    with pytest.raises(KubeRayError, match="verbs create, get, list, watch, delete"):
        _runner(cluster).status(SPEC.job_id)


def test_missing_crds_say_to_install_the_kuberay_operator(cluster: Cluster) -> None:
    # Without the CRDs the API server has no rayjobs endpoint and discovery has no ray.io/v1.
    not_found = _status_body(404, "NotFound", "the server could not find the requested resource")

    def no_crds(emu: kmock.KubernetesEmulator) -> None:
        emu[kmock.resource(RAYJOBS)] << 404 << not_found
        emu["get /apis/ray.io/v1"] << 404 << not_found

    cluster.react(no_crds)
    runner = _runner(cluster)
    for call in (
        lambda: runner.submit(SPEC),
        lambda: runner.status("x"),
        lambda: runner.cancel("x"),
    ):
        with pytest.raises(KubeRayError, match="KubeRay CRDs not installed") as caught:
            call()
        assert "helm install kuberay-operator kuberay/kuberay-operator" in str(caught.value)


def test_missing_namespace_is_not_mistaken_for_missing_crds(cluster: Cluster) -> None:
    cluster.react(
        lambda emu: (
            emu[kmock.action.CREATE, kmock.resource(RAYJOBS)]
            << 404
            << _status_body(
                404,
                "NotFound",
                'namespaces "tuneloop" not found',
                {"name": NS, "kind": "namespaces"},
            )
        )
    )
    with pytest.raises(KubeRayError, match="namespace tuneloop does not exist"):
        _runner(cluster).submit(SPEC)


def test_from_config_reads_a_kubeconfig(cluster: Cluster, tmp_path: Path, monkeypatch) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": cluster.url}}],
                "users": [{"name": "dev", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "dev", "context": {"cluster": "kmock", "user": "dev", "namespace": NS}}
                ],
                "current-context": "dev",
            }
        )
    )
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    runner = KubeRayRunner.from_config(kubeconfig=str(kubeconfig), image="tuneloop/training:test")
    assert runner.namespace == NS
    runner.submit(SPEC)
    assert _get(cluster, rayjob_name(SPEC.job_id))["metadata"]["namespace"] == NS


ENV_FROM = [("configmap", "rel-tuneloop-settings"), ("secret", "rel-tuneloop-s3")]
GPU_NODES = {"nvidia.com/gpu.present": "true"}
GPU_TAINT = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def _pods(manifest: dict) -> tuple[dict, dict]:
    cluster = manifest["spec"]["rayClusterSpec"]
    (workers,) = cluster["workerGroupSpecs"]
    return cluster["headGroupSpec"]["template"]["spec"], workers["template"]["spec"]


def test_settings_and_credentials_reach_head_and_workers_by_reference(cluster: Cluster) -> None:
    runner = _runner(
        cluster, env_from=ENV_FROM, worker_node_selector=GPU_NODES, worker_tolerations=GPU_TAINT
    )
    manifest = runner.manifest(SPEC)
    assert_valid_rayjob(manifest)
    head, worker = _pods(manifest)
    for pod in (head, worker):
        (container,) = pod["containers"]
        assert container["envFrom"] == [
            {"configMapRef": {"name": "rel-tuneloop-settings"}},
            {"secretRef": {"name": "rel-tuneloop-s3"}},
        ]
        assert {e["name"] for e in container["env"]} == set(SPEC.env)  # still there, and win
    # GPU scheduling is for the workers; the head stays schedulable anywhere.
    assert worker["nodeSelector"] == GPU_NODES and worker["tolerations"] == GPU_TAINT
    assert "nodeSelector" not in head and "tolerations" not in head


def test_without_options_pods_get_no_env_from_or_scheduling_fields(cluster: Cluster) -> None:
    for pod in _pods(_runner(cluster).manifest(SPEC)):
        assert "envFrom" not in pod["containers"][0]
        assert "nodeSelector" not in pod and "tolerations" not in pod


def test_the_model_claim_is_mounted_read_only_in_every_pod(cluster: Cluster) -> None:
    manifest = _runner(cluster, model_claim="rel-tuneloop-model",
                       model_mount_path="/models").manifest(SPEC)
    assert_valid_rayjob(manifest)
    for pod in _pods(manifest):
        (container,) = pod["containers"]
        (mount,) = container["volumeMounts"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert mount["mountPath"] == "/models" and mount["readOnly"] is True
        assert volume["persistentVolumeClaim"] == {"claimName": "rel-tuneloop-model",
                                                   "readOnly": True}
    for pod in _pods(_runner(cluster).manifest(SPEC)):  # no claim: no volume at all
        assert "volumes" not in pod and "volumeMounts" not in pod["containers"][0]


def test_schema_rejects_a_misspelt_env_from_source(cluster: Cluster) -> None:
    manifest = _runner(cluster, env_from=ENV_FROM).manifest(SPEC)
    _, worker = _pods(manifest)
    worker["containers"][0]["envFrom"].append({"secretRefs": {"name": "typo"}})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(manifest, SCHEMA)


def test_runner_refuses_an_unknown_env_from_kind(cluster: Cluster) -> None:
    with pytest.raises(ValueError, match="secret:NAME or configmap:NAME"):
        _runner(cluster, env_from=[("vault", "s3")])


def test_make_runner_passes_the_settings_and_never_inlines_secret_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.settings import load_settings
    from training.jobs.runners import make_runner

    # The gateway process has the S3 keys in its environment; the RayJob must only name the
    # Secret they come from.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-gateway-only")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3-secret-value")
    monkeypatch.setattr(
        KubeRayRunner, "from_config", classmethod(lambda cls, **kwargs: cls(None, **kwargs))
    )
    settings = load_settings({
        "TUNELOOP_TRAINING_RUNNER": "kuberay",
        "TUNELOOP_KUBERAY_NAMESPACE": NS,
        "TUNELOOP_KUBERAY_IMAGE": "tuneloop/training:test",
        "TUNELOOP_KUBERAY_ENV_FROM": "configmap:rel-tuneloop-settings, secret:rel-tuneloop-s3",
        "TUNELOOP_KUBERAY_WORKER_NODE_SELECTOR": json.dumps(GPU_NODES),
        "TUNELOOP_KUBERAY_WORKER_TOLERATIONS": json.dumps(GPU_TAINT),
        "TUNELOOP_KUBERAY_MODEL_CLAIM": "rel-tuneloop-model",
        "TUNELOOP_KUBERAY_MODEL_MOUNT_PATH": "/models",
    })  # fmt: skip
    runner = make_runner(settings)
    assert isinstance(runner, KubeRayRunner)
    manifest = runner.manifest(SPEC)
    assert_valid_rayjob(manifest)
    text = json.dumps(manifest)
    assert "s3-secret-value" not in text and "AKIA-gateway-only" not in text
    head, worker = _pods(manifest)
    for pod in (head, worker):
        assert not [e for e in pod["containers"][0]["env"] if e["name"].startswith("AWS_")]
        assert {"secretRef": {"name": "rel-tuneloop-s3"}} in pod["containers"][0]["envFrom"]
        assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "rel-tuneloop-model"
    assert worker["nodeSelector"] == GPU_NODES and worker["tolerations"] == GPU_TAINT


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"TUNELOOP_KUBERAY_ENV_FROM": "rel-tuneloop-s3"}, "secret:NAME or configmap:NAME"),
        ({"TUNELOOP_KUBERAY_ENV_FROM": "secret:Bad_Name"}, "TUNELOOP_KUBERAY_ENV_FROM"),
        ({"TUNELOOP_KUBERAY_WORKER_NODE_SELECTOR": "gpu=true"}, "JSON object"),
        ({"TUNELOOP_KUBERAY_WORKER_TOLERATIONS": "[{"}, "JSON list"),
    ],
)
def test_bad_kuberay_pod_settings_say_what_to_write(env: dict, needle: str) -> None:
    from pydantic import ValidationError

    from services.settings import load_settings

    with pytest.raises(ValidationError, match=re.escape(needle)):
        load_settings(env)
