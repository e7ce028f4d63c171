"""Training runs as KubeRay ``RayJob`` custom resources, created with the official ``kubernetes`` client.

One tuneloop job is one RayJob named from the job id. KubeRay starts a Ray cluster (a head and a
worker group sized from the run spec), runs the entrypoint on it, tears the cluster down when the
job ends (``shutdownAfterJobFinishes``) and deletes the RayJob ``ttlSecondsAfterFinished`` later.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from services.errors import Unavailable
from training.runners.base import RunSpec, RunState, RunStatus

GROUP = "ray.io"
VERSION = "v1"
PLURAL = "rayjobs"
KIND = "RayJob"
MANAGED_BY = "tuneloop"
JOB_ID_KEY = "tuneloop.dev/job-id"
# KubeRay derives RayCluster, Service and Pod names from the RayJob name; it refuses longer names.
MAX_NAME_LENGTH = 47
_SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

# envFrom source kinds (TUNELOOP_KUBERAY_ENV_FROM's ``secret:NAME`` / ``configmap:NAME``).
ENV_FROM_REFS = {"secret": "secretRef", "configmap": "configMapRef"}

CRD_MISSING_HINT = (
    "KubeRay CRDs not installed: install the KubeRay operator "
    "(helm install kuberay-operator kuberay/kuberay-operator)"
)


class KubeRayError(Unavailable):
    """The cluster refused or cannot run RayJobs (RBAC, missing CRDs, API errors).

    The job that caused it should fail with this message: it says what to grant or install.
    """

    code = "kuberay_error"


def rayjob_name(job_id: str) -> str:
    """A DNS-1035 name for the job's RayJob: ``tuneloop-<id>``, hashed when the id does not fit."""
    slug = re.sub(r"[^a-z0-9-]+", "-", job_id.lower()).strip("-")
    name = f"tuneloop-{slug}" if slug else "tuneloop"
    if name[len("tuneloop-") :] == job_id and len(name) <= MAX_NAME_LENGTH:
        return name
    # Lossy or too long: a short digest keeps distinct ids on distinct names.
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:10]
    return f"{name[: MAX_NAME_LENGTH - len(digest) - 1].rstrip('-')}-{digest}"


def label_value(job_id: str) -> str:
    """The job id as a valid label value (the exact id is also kept in an annotation)."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", job_id)[:63]
    return value.strip("-_.")


def build_rayjob(
    spec: RunSpec,
    *,
    namespace: str,
    image: str,
    ttl_seconds_after_finished: int = 3600,
    head_cpus: float = 1.0,
    head_memory: str = "2Gi",
    service_account: str | None = None,
    ray_version: str | None = None,
    env_from: Sequence[tuple[str, str]] = (),
    worker_node_selector: dict[str, str] | None = None,
    worker_tolerations: Sequence[dict[str, Any]] = (),
    model_claim: str | None = None,
    model_mount_path: str = "/models",
) -> dict[str, Any]:
    """The RayJob manifest for ``spec`` (pure: no API calls).

    ``env_from`` (``("secret" | "configmap", name)``) become every container's ``envFrom``, so
    credentials reach the pods by reference and never appear in the manifest; the worker pods
    (the GPU ones) also get ``worker_node_selector`` and ``worker_tolerations``. With
    ``model_claim``, every pod mounts that PersistentVolumeClaim read-only at
    ``model_mount_path`` (the base model the engines serve, where TUNELOOP_BASE_MODEL points).
    Raises ValueError for an unknown source kind.
    """
    model = (model_claim, model_mount_path) if model_claim else None
    env = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
    sources = _env_from(env_from)
    worker_resources: dict[str, dict[str, Any]] = {
        "requests": {"cpu": _quantity(spec.cpus_per_worker)},
        "limits": {"cpu": _quantity(spec.cpus_per_worker)},
    }
    if spec.memory_per_worker:
        worker_resources["requests"]["memory"] = spec.memory_per_worker
        worker_resources["limits"]["memory"] = spec.memory_per_worker
    if spec.gpus_per_worker:
        worker_resources["requests"]["nvidia.com/gpu"] = spec.gpus_per_worker
        worker_resources["limits"]["nvidia.com/gpu"] = spec.gpus_per_worker
    head_resources = {
        "requests": {"cpu": _quantity(head_cpus), "memory": head_memory},
        "limits": {"cpu": _quantity(head_cpus), "memory": head_memory},
    }
    cluster: dict[str, Any] = {
        "headGroupSpec": {
            "rayStartParams": {"dashboard-host": "0.0.0.0"},
            "template": _pod_template(
                "ray-head", image, env, sources, head_resources, service_account, model=model
            ),
        },
        "workerGroupSpecs": [
            {
                "groupName": "workers",
                "replicas": spec.num_workers,
                "minReplicas": spec.num_workers,
                "maxReplicas": spec.num_workers,
                "rayStartParams": {},
                "template": _pod_template(
                    "ray-worker", image, env, sources, worker_resources, service_account,
                    node_selector=worker_node_selector, tolerations=worker_tolerations,
                    model=model,
                ),
            }
        ],
    }
    if ray_version:
        cluster["rayVersion"] = ray_version
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": rayjob_name(spec.job_id),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": MANAGED_BY,
                "app.kubernetes.io/component": "training",
                JOB_ID_KEY: label_value(spec.job_id),
            },
            "annotations": {JOB_ID_KEY: spec.job_id},
        },
        "spec": {
            "entrypoint": shlex.join(spec.entrypoint),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": ttl_seconds_after_finished,
            # A failed training run is retried by tuneloop's policy, not by KubeRay.
            "backoffLimit": 0,
            "rayClusterSpec": cluster,
        },
    }


def map_status(obj: dict[str, Any]) -> RunStatus:
    """RunStatus of a RayJob object from its ``.status`` (jobStatus, jobDeploymentStatus)."""
    if obj.get("metadata", {}).get("deletionTimestamp"):
        return RunStatus(RunState.CANCELLED, "RayJob is being deleted")
    status = obj.get("status") or {}
    job_status = (status.get("jobStatus") or "").upper()
    deployment = status.get("jobDeploymentStatus") or ""
    detail = status.get("message") or status.get("reason")
    if deployment in ("Failed", "ValidationFailed"):
        return RunStatus(
            RunState.FAILED, f"RayJob deployment {deployment}" + (f": {detail}" if detail else "")
        )
    if job_status == "SUCCEEDED":
        return RunStatus(RunState.SUCCEEDED, detail)
    if job_status == "FAILED":
        return RunStatus(RunState.FAILED, detail or "the Ray job failed; see the head pod's logs")
    if job_status == "STOPPED":
        return RunStatus(RunState.CANCELLED, detail or "the Ray job was stopped")
    if job_status == "RUNNING":
        return RunStatus(RunState.RUNNING, detail)
    if deployment:
        return RunStatus(
            RunState.PENDING, f"RayJob {deployment}" + (f": {detail}" if detail else "")
        )
    return RunStatus(RunState.PENDING, detail or "waiting for the KubeRay operator")


class KubeRayRunner:
    """A ``JobRunner`` that runs each job as a RayJob in one namespace.

    Errors: 403 and missing CRDs raise :class:`KubeRayError` with what to grant or install.
    """

    def __init__(
        self,
        api: k8s.CustomObjectsApi,
        *,
        namespace: str,
        image: str | None = None,
        ttl_seconds_after_finished: int = 3600,
        head_cpus: float = 1.0,
        head_memory: str = "2Gi",
        service_account: str | None = None,
        ray_version: str | None = None,
        env_from: Sequence[tuple[str, str]] = (),
        worker_node_selector: dict[str, str] | None = None,
        worker_tolerations: Sequence[dict[str, Any]] = (),
        model_claim: str | None = None,
        model_mount_path: str = "/models",
    ) -> None:
        _env_from(env_from)  # refuse a bad source now, not at the first submission
        self.api = api
        self.namespace = namespace
        self.image = image
        self.ttl_seconds_after_finished = ttl_seconds_after_finished
        self.head_cpus = head_cpus
        self.head_memory = head_memory
        self.service_account = service_account
        self.ray_version = ray_version
        self.env_from = list(env_from)
        self.worker_node_selector = dict(worker_node_selector or {})
        self.worker_tolerations = list(worker_tolerations)
        self.model_claim = model_claim
        self.model_mount_path = model_mount_path

    @classmethod
    def from_config(
        cls, *, namespace: str | None = None, kubeconfig: str | None = None, **kwargs: Any
    ) -> KubeRayRunner:
        """Build from the in-cluster service account, else from a kubeconfig (default ~/.kube).

        ``namespace`` defaults to the pod's own namespace (in cluster) or the kubeconfig context's.
        ``kwargs`` go to the constructor (image, ttl_seconds_after_finished, ...).
        """
        try:
            k8s_config.load_incluster_config()
            default_ns = (
                _SA_NAMESPACE_FILE.read_text().strip() if _SA_NAMESPACE_FILE.is_file() else None
            )
        except k8s_config.ConfigException:
            try:
                k8s_config.load_kube_config(config_file=kubeconfig)
            except (k8s_config.ConfigException, OSError) as exc:
                raise KubeRayError(
                    "no Kubernetes configuration: run tuneloop in a pod with a service account or "
                    f"set KUBECONFIG to a kubeconfig file ({exc})"
                ) from exc
            _, context = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
            default_ns = (context or {}).get("context", {}).get("namespace")
        return cls(
            k8s.CustomObjectsApi(k8s.ApiClient()),
            namespace=namespace or default_ns or "default",
            **kwargs,
        )

    def manifest(self, spec: RunSpec) -> dict[str, Any]:
        """The RayJob this runner creates for ``spec``."""
        image = spec.image or self.image
        if not image:
            raise KubeRayError(
                f"no container image for job {spec.job_id}: set TUNELOOP_KUBERAY_IMAGE "
                "(chart value training.kuberay.image) to the tuneloop training image"
            )
        return build_rayjob(
            spec,
            namespace=self.namespace,
            image=image,
            ttl_seconds_after_finished=self.ttl_seconds_after_finished,
            head_cpus=self.head_cpus,
            head_memory=self.head_memory,
            service_account=self.service_account,
            ray_version=self.ray_version,
            env_from=self.env_from,
            worker_node_selector=self.worker_node_selector,
            worker_tolerations=self.worker_tolerations,
            model_claim=self.model_claim,
            model_mount_path=self.model_mount_path,
        )

    def submit(self, spec: RunSpec) -> None:
        """Create the job's RayJob; a RayJob that already exists for this job is success."""
        body = self.manifest(spec)
        name = body["metadata"]["name"]
        try:
            self.api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
            return
        except ApiException as exc:
            if exc.status != 409:
                raise self._error(exc, "create", name) from exc
        # A retried submission: the RayJob is there; make sure it is this job's, not a name clash.
        existing = self._get(name)
        owner = (existing or {}).get("metadata", {}).get("annotations", {}).get(JOB_ID_KEY)
        if existing is not None and owner not in (None, spec.job_id):
            raise KubeRayError(
                f"RayJob {self.namespace}/{name} belongs to tuneloop job {owner!r}, not "
                f"{spec.job_id!r}; delete it (kubectl delete rayjob -n {self.namespace} {name})"
            )

    def status(self, job_id: str) -> RunStatus:
        """The job's state from its RayJob's status; a RayJob that is gone reports FAILED."""
        name = rayjob_name(job_id)
        obj = self._get(name)
        if obj is None:
            return RunStatus(
                RunState.FAILED,
                f"RayJob {self.namespace}/{name} not found: it was deleted before its outcome "
                f"was recorded (cancelled, or ttlSecondsAfterFinished="
                f"{self.ttl_seconds_after_finished} elapsed)",
            )
        return map_status(obj)

    def cancel(self, job_id: str) -> None:
        """Delete the job's RayJob (KubeRay then removes its Ray cluster); gone already is fine."""
        name = rayjob_name(job_id)
        try:
            self.api.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, propagation_policy="Background"
            )
        except ApiException as exc:
            if exc.status == 404 and self._rayjobs_served():
                return
            raise self._error(exc, "delete", name) from exc

    def _get(self, name: str) -> dict[str, Any] | None:
        try:
            # The client is untyped (object); a custom object is a JSON dict.
            return cast("dict[str, Any]", self.api.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
            ))
        except ApiException as exc:
            if exc.status == 404 and self._rayjobs_served():
                return None
            raise self._error(exc, "get", name) from exc

    def _rayjobs_served(self) -> bool:
        """Whether the API server knows ``rayjobs.ray.io`` (tells a missing object from missing CRDs)."""
        try:
            resources = self.api.get_api_resources(GROUP, VERSION)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise self._error(exc, "discover", f"{GROUP}/{VERSION}") from exc
        return any(r.name == PLURAL for r in resources.resources or [])

    def _error(self, exc: ApiException, verb: str, name: str) -> KubeRayError:
        if exc.status == 403:
            return KubeRayError(
                f"Kubernetes refused to {verb} RayJob {self.namespace}/{name} (403 Forbidden: "
                f"{_api_message(exc)}). Grant tuneloop's service account the verbs create, get, "
                f"list, watch, delete on rayjobs (group ray.io) in namespace {self.namespace}: "
                "the tuneloop Helm chart's Role does this when training.runner=kuberay"
            )
        if exc.status == 404:
            if _api_details(exc).get("kind") == "namespaces":
                return KubeRayError(
                    f"namespace {self.namespace} does not exist: create it or set "
                    "TUNELOOP_KUBERAY_NAMESPACE to the namespace KubeRay jobs should run in"
                )
            return KubeRayError(CRD_MISSING_HINT)
        return KubeRayError(
            f"Kubernetes API error on {verb} RayJob {self.namespace}/{name}: "
            f"{exc.status} {_api_message(exc)}"
        )


def _api_body(exc: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _api_message(exc: ApiException) -> str:
    return str(_api_body(exc).get("message") or exc.reason)


def _api_details(exc: ApiException) -> dict[str, Any]:
    details = _api_body(exc).get("details")
    return details if isinstance(details, dict) else {}


def _quantity(cpus: float) -> str:
    """CPU count as a Kubernetes quantity: 1 -> "1", 0.5 -> "500m"."""
    return str(int(cpus)) if float(cpus).is_integer() else f"{round(cpus * 1000)}m"


def _env_from(sources: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """``envFrom`` entries of ``(kind, name)`` sources."""
    entries = []
    for kind, name in sources:
        if kind not in ENV_FROM_REFS or not name:
            raise ValueError(
                f"envFrom source {kind}:{name} is not secret:NAME or configmap:NAME; fix "
                "TUNELOOP_KUBERAY_ENV_FROM (e.g. configmap:tuneloop-settings,secret:tuneloop-s3)"
            )
        entries.append({ENV_FROM_REFS[kind]: {"name": name}})
    return entries


def _pod_template(
    container: str,
    image: str,
    env: list[dict[str, str]],
    env_from: list[dict[str, Any]],
    resources: dict[str, Any],
    service_account: str | None,
    *,
    node_selector: dict[str, str] | None = None,
    tolerations: Sequence[dict[str, Any]] = (),
    model: tuple[str, str] | None = None,
) -> dict[str, Any]:
    container_spec: dict[str, Any] = {"name": container, "image": image, "env": env}
    if env_from:
        container_spec["envFrom"] = env_from
    container_spec["resources"] = resources
    pod: dict[str, Any] = {"containers": [container_spec]}
    if model is not None:
        claim, mount_path = model
        container_spec["volumeMounts"] = [{"name": "base-model", "mountPath": mount_path,
                                           "readOnly": True}]
        pod["volumes"] = [{"name": "base-model", "persistentVolumeClaim": {
            "claimName": claim, "readOnly": True}}]
    if service_account:
        pod["serviceAccountName"] = service_account
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod["tolerations"] = [dict(t) for t in tolerations]
    return {
        "metadata": {"labels": {"app.kubernetes.io/managed-by": MANAGED_BY}},
        "spec": pod,
    }
