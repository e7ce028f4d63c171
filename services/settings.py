"""Typed settings for every tuneloop process.

Every field reads a ``TUNELOOP_<FIELD>`` environment variable. Nothing is built at import time:
call :func:`load_settings` (or construct :class:`Settings` with an explicit environment in tests).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

DEFAULT_BASE_MODEL_NAME = "SmolLM2-135M-Instruct"
# A Kubernetes object name (DNS-1123 subdomain).
_OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


class Settings(BaseSettings):
    """All configuration of tuneloop; defaults give the embedded single-machine setup."""

    model_config = SettingsConfigDict(env_prefix="TUNELOOP_", extra="ignore")

    data_dir: Path = Field(default=Path(".tuneloop"))
    """Where the embedded defaults keep state: the SQLite database, artifacts, imported models."""

    database_url: str | None = None
    """SQLAlchemy URL of the store. Default: SQLite at ``<data_dir>/tuneloop.db`` in WAL mode.
    PostgreSQL: ``postgresql+psycopg://user:password@host/db``."""

    artifacts_url: str | None = None
    """fsspec URL of the artifact store (adapters, datasets, checkpoints).
    Default: ``<data_dir>/artifacts``. Example: ``s3://bucket/tuneloop``."""

    base_model: str | None = None
    """Local Hugging Face model directory served and fine-tuned. Default: the SmolLM2-135M-Instruct
    model imported by ``tuneloop models import-default`` into ``<data_dir>/models``."""

    base_model_name: str | None = None
    """Public name of the base model in the API (``model`` field). Default: the directory name."""

    admin_key: SecretStr | None = None
    """Admin API key. If unset, one is generated on first start, printed once and stored hashed."""

    host: str = "127.0.0.1"
    """Address the gateway listens on."""

    port: int = Field(default=8000, ge=1, le=65535)
    """Port the gateway listens on."""

    engine_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Base URLs of remote vLLM OpenAI servers (comma separated). Empty: spawn one local engine."""

    engine_port: int = Field(default=8100, ge=1, le=65535)
    """Port of the locally spawned vLLM engine."""

    engine_start_timeout_s: float = Field(default=300.0, gt=0)
    """How long to wait for a spawned engine to become healthy."""

    engine_memory_fraction: float = Field(default=0.1, gt=0, le=1)
    """vLLM ``--gpu-memory-utilization``; on CPU the share of host RAM reserved for KV cache."""

    engine_kv_cache_bytes: int | None = Field(default=512 * 1024 * 1024, gt=0)
    """Explicit KV cache size of a spawned engine (vLLM ``--kv-cache-memory-bytes``); takes
    precedence over ``engine_memory_fraction``, whose share of RAM can come out negative on
    small CPU machines. Unset it (empty) to size the cache by the fraction (GPUs)."""

    engine_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    """vLLM ``--dtype`` of the engines this process starts. ``auto``: on a CPU build of vLLM,
    ``bfloat16`` where the CPU computes it natively (AVX512-BF16 or AMX-BF16), else ``float32``
    (emulated bfloat16 is 2-4x slower than float32 there: docs/benchmarks.md); on GPUs, vLLM's
    own choice (the model's dtype)."""

    engine_api_key: SecretStr | None = None
    """The engine key: engines (vLLM ``--api-key``) refuse every request without it except
    ``/health``, and gateways, the monitor and training jobs send it. Unset: ``tuneloop serve``
    makes a random one for the engine it spawns; remote engines need it set on both sides."""

    engine_extra_args: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """More vLLM server arguments for every engine this process starts (``tuneloop engine``, the
    engine of ``tuneloop serve``), shell-quoted: ``--enable-auto-tool-choice
    --tool-call-parser hermes``. The same list the chart's ``engine.extraArgs`` sets."""

    metrics_token: SecretStr | None = None
    """Bearer token ``/metrics`` requires (gateways and the monitor). Unset: the engine key when
    that is set (the chart's Prometheus sends it), else ``/metrics`` is open: keep it on a
    loopback or private address then, it names every tenant and adapter."""

    engine_adapter_cache_entries: int = Field(default=32, ge=1)
    """Adapter versions an engine host keeps unpacked on local disk (fetched from the artifact
    store, hash verified); the least recently used beyond it are deleted. Keep it above
    ``max_cpu_loras``: vLLM reads a cached adapter's files again when it re-activates it."""

    max_model_len: int = Field(default=1024, ge=64)
    """Maximum prompt + completion tokens per request (vLLM ``--max-model-len``)."""

    max_loras: int = Field(default=4, ge=1)
    """Adapters active in one engine batch (vLLM ``--max-loras``)."""

    max_cpu_loras: int = Field(default=8, ge=1)
    """Adapters cached by one engine (vLLM ``--max-cpu-loras``); beyond it the gateway unloads the
    least recently used adapter."""

    max_lora_rank: int = Field(default=8, ge=1)
    """Largest LoRA rank an engine accepts (vLLM ``--max-lora-rank``); bigger adapters are refused
    at registration."""

    max_adapter_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    """Largest adapter (archive or unpacked) accepted at registration."""

    max_request_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    """Largest request body of every route but the uploads (chat, classify, feedback, jobs,
    admin): refused with 413 before it is read."""

    max_upload_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    """Largest file accepted by the files API."""

    dataset_strict: bool = False
    """Refuse a classification file whose text repeats with another label (an issue with its
    line). Default: a warning in the file's stats, the later lines dropped. Exact duplicates are
    always a warning, trained once."""

    serving_sync_interval_s: float = Field(default=0.5, gt=0, le=60)
    """How often each gateway checks the store for changes made by other processes (keys,
    tenants, adapters, promotions) and drops its caches: the bound on how long a revocation or
    promotion made elsewhere takes to be in force here (plus one store read)."""

    max_labels: int = Field(default=64, ge=2)
    """Most labels a classification adapter may have (each classify call scores every label)."""

    max_label_chars: int = Field(default=64, ge=1)
    """Longest label, in characters, a classification adapter may have."""

    request_timeout_s: float = Field(default=300.0, gt=0)
    """Timeout of one engine request made by the gateway."""

    tenant_max_concurrency: int = Field(default=64, ge=1)
    """Requests one tenant may have in flight at once, each counted by its sequences
    (TUNELOOP_MAX_REQUEST_SEQUENCES); more get 429."""

    tenant_rate_per_s: float = Field(default=200.0, gt=0)
    """Sustained requests per second per tenant (token bucket; a request costs its sequences,
    at most the bucket's size); more get 429."""

    max_request_sequences: int = Field(default=256, ge=1)
    """Most sequences one inference request may ask the engine for (classify: its texts;
    completions: prompts x ``n``; chat: ``n``); more get 400. Admission weighs a request by
    them: it takes that many of the tenant's TUNELOOP_TENANT_MAX_CONCURRENCY slots (all of them
    at most) and rate tokens."""

    stream_idle_timeout_s: float = Field(default=120.0, gt=0)
    """A streamed response whose engine sends nothing for this long ends with an error event
    (``stream_idle_timeout``) and gives back its slot and engine request."""

    tenant_max_files: int = Field(default=1000, ge=1)
    """Dataset files one tenant may store (files API and the monitor's compiled datasets); one
    more answers 403 ``quota_exceeded``."""

    tenant_max_adapters: int = Field(default=100, ge=1)
    """Adapters (names) one tenant may have; registering or fine-tuning a new name beyond it
    answers 403 ``quota_exceeded``."""

    tenant_max_versions_per_adapter: int = Field(default=100, ge=1)
    """Versions one adapter may have (registered or trained); one more answers 403
    ``quota_exceeded``."""

    tenant_max_feedback_records: int = Field(default=1_000_000, ge=1)
    """Feedback records one tenant may store; a submission that would go beyond it answers 403
    ``quota_exceeded`` (nothing of it is stored)."""

    request_log_sample_rate: float = Field(default=1.0, ge=0, le=1)
    """Share of served requests stored in the request log (decided by a hash of the response id).
    A response that is not stored cannot receive feedback."""

    request_log_tenant_sample_rates: dict[str, float] = Field(default_factory=dict)
    """Per-tenant sampling rates overriding the default, as JSON: ``{"acme": 0.1}``."""

    request_log_retention_days: float | None = Field(default=None, gt=0)
    """Days a request-log row is kept before it is deleted. Unset: kept forever."""

    request_log_tenant_retention_days: dict[str, float] = Field(default_factory=dict)
    """Per-tenant retention in days overriding the default, as JSON: ``{"acme": 7}``."""

    request_log_redact: bool = True
    """Mask emails, phone numbers and card numbers in logged inputs and outputs."""

    request_log_max_chars: int = Field(default=65_536, ge=256)
    """Characters of a request's input (and, separately, of its output) kept in the request log;
    longer ones are cut and marked ``[TRUNCATED]`` (and left out of compiled datasets). Only the
    ``role`` and ``content`` of chat messages (and the text of content parts) are logged."""

    ray_address: str | None = None
    """Ray cluster address (``ray://host:10001`` or ``http://host:8265`` for the Jobs API).
    Unset: a local Ray started by tuneloop."""

    training_runner: Literal["local", "ray", "kuberay"] = "local"
    """Where training jobs run: ``local`` (Ray on this machine), ``ray`` (the cluster at
    TUNELOOP_RAY_ADDRESS, via the Ray Jobs API) or ``kuberay`` (RayJobs on Kubernetes)."""

    kuberay_namespace: str = "default"
    """Namespace where the KubeRay runner creates RayJobs."""

    kuberay_image: str | None = None
    """Container image of RayJob pods (must contain tuneloop and its training dependencies)."""

    kuberay_env_from: str = ""
    """ConfigMaps and Secrets in ``kuberay_namespace`` whose keys become the environment of every
    RayJob pod, comma separated ``secret:NAME`` / ``configmap:NAME`` (the chart names its
    settings ConfigMap and S3 Secret): credentials reach the pods by reference, never inline."""

    kuberay_worker_node_selector: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict)
    """``nodeSelector`` of RayJob worker pods, as JSON: ``{"nvidia.com/gpu.present": "true"}``."""

    kuberay_worker_tolerations: Annotated[list[dict[str, Any]], NoDecode] = Field(
        default_factory=list)
    """``tolerations`` of RayJob worker pods, as JSON: ``[{"key": "nvidia.com/gpu",
    "operator": "Exists", "effect": "NoSchedule"}]``."""

    kuberay_model_claim: str | None = None
    """PersistentVolumeClaim in ``kuberay_namespace`` holding the base model: mounted read-only
    into every RayJob pod at ``kuberay_model_mount_path``, so training reads the model the engines
    serve (the chart sets it for ``baseModel.source: pvc``). Unset: the training image's own copy
    at TUNELOOP_BASE_MODEL, else the default model imported in the pod."""

    kuberay_model_mount_path: str = "/models"
    """Where RayJob pods mount ``kuberay_model_claim`` (TUNELOOP_BASE_MODEL lies under it)."""

    monitor_in_serve: bool = True
    """Run the monitor loop inside ``tuneloop serve``. Turn it off on gateway replicas when a
    dedicated ``tuneloop monitor`` process runs (only one monitor may act on an adapter)."""

    monitor_interval_s: float = Field(default=60.0, gt=0)
    """Seconds between two monitor passes."""

    monitor_metrics_port: int = Field(default=9100, ge=1, le=65535)
    """Port where ``tuneloop monitor`` serves ``/metrics``."""

    train_concurrency: int = Field(default=1, ge=0)
    """Training jobs this process runs at once. 0: the process queues jobs but runs none (set it
    on all but one gateway replica, or run training in a dedicated process)."""

    train_job_stale_after_s: float = Field(default=30.0, gt=0)
    """A running job whose owner has not sent a heartbeat for this long is recovered."""

    train_max_active_jobs: int = Field(default=16, ge=1)
    """Fine-tuning jobs the whole platform keeps queued, running or paused; beyond it creating
    one answers 429. Operator-owned: no tenant setting can raise it."""

    train_max_active_jobs_per_tenant: int = Field(default=4, ge=1)
    """The same bound per tenant (one tenant cannot take the platform's whole queue), also the
    most a retrain policy's ``max_concurrent_jobs_per_tenant`` / ``_total`` may ask for."""

    train_max_steps: int = Field(default=100_000, ge=1)
    """Most optimizer steps one job may run (epochs x examples / batch, or ``max_steps``)."""

    train_workers: int = Field(default=1, ge=1)
    """Ray Train workers per training job."""

    train_cpus_per_worker: float | None = Field(default=None, gt=0)
    """CPUs (and torch threads) per Ray Train worker. Unset: the Ray cluster's CPUs shared by
    the job's workers, at most a node's (all cores here with the embedded Ray); set it when
    several jobs train at once (TUNELOOP_TRAIN_CONCURRENCY) or to size KubeRay worker pods
    (unset: 1 CPU each)."""

    train_use_gpu: bool = False
    """Train on GPUs (nccl) instead of CPUs (gloo)."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Log level of tuneloop processes."""

    @field_validator("engine_kv_cache_bytes", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("engine_extra_args", mode="before")
    @classmethod
    def _split_args(cls, value: object) -> object:
        if isinstance(value, str):
            import shlex

            return shlex.split(value)
        return value

    @field_validator("engine_urls", mode="before")
    @classmethod
    def _split_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [u.strip().rstrip("/") for u in value.split(",") if u.strip()]
        return value

    @field_validator("kuberay_env_from")
    @classmethod
    def _check_env_from(cls, value: str) -> str:
        kuberay_env_sources(value)
        return value

    @field_validator("kuberay_worker_node_selector", "kuberay_worker_tolerations", mode="before")
    @classmethod
    def _parse_json(cls, value: object, info: ValidationInfo) -> object:
        # Decoded here rather than by pydantic-settings so load_settings(environ) parses it too.
        if not isinstance(value, str):
            return value
        selector = info.field_name == "kuberay_worker_node_selector"
        if not value.strip():
            return {} if selector else []
        try:
            return json.loads(value)
        except ValueError as exc:
            example = ('{"nvidia.com/gpu.present": "true"}' if selector
                       else '[{"key": "nvidia.com/gpu", "operator": "Exists"}]')
            raise ValueError(
                f"TUNELOOP_{str(info.field_name).upper()} is not JSON ({exc}): {value!r}; set it "
                f"to a JSON {'object' if selector else 'list'}, e.g. {example}"
            ) from exc

    @model_validator(mode="after")
    def _check_cross_fields(self) -> Settings:
        if self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"max_cpu_loras ({self.max_cpu_loras}) must be >= max_loras ({self.max_loras}); "
                "raise TUNELOOP_MAX_CPU_LORAS or lower TUNELOOP_MAX_LORAS"
            )
        if not self.engine_urls and self.engine_port == self.port:
            raise ValueError(
                f"engine_port ({self.engine_port}) equals the gateway port; "
                "set TUNELOOP_ENGINE_PORT to a free port"
            )
        if self.database_url and not self.database_url.startswith(("sqlite", "postgresql")):
            raise ValueError(
                f"database_url {self.database_url!r} is not supported; use sqlite:///path or "
                "postgresql+psycopg://user:password@host/db"
            )
        if self.training_runner == "ray" and not self.ray_address:
            raise ValueError(
                "training_runner is 'ray' but ray_address is unset; set TUNELOOP_RAY_ADDRESS "
                "(e.g. http://ray-head:8265) or use TUNELOOP_TRAINING_RUNNER=local"
            )
        if self.training_runner == "kuberay" and not self.kuberay_image:
            raise ValueError(
                "training_runner is 'kuberay' but kuberay_image is unset; set "
                "TUNELOOP_KUBERAY_IMAGE to an image with tuneloop installed"
            )
        return self

    # Derived locations. Properties, so tests that pass a data_dir get everything under it.

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'tuneloop.db').resolve()}"

    @property
    def resolved_artifacts_url(self) -> str:
        return self.artifacts_url or str((self.data_dir / "artifacts").resolve())

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def default_base_model_dir(self) -> Path:
        return (self.models_dir / DEFAULT_BASE_MODEL_NAME).resolve()

    @property
    def resolved_base_model(self) -> Path:
        return Path(self.base_model).resolve() if self.base_model else self.default_base_model_dir

    @property
    def resolved_base_model_name(self) -> str:
        return self.base_model_name or self.resolved_base_model.name

    @property
    def kuberay_env_sources(self) -> list[tuple[str, str]]:
        """``kuberay_env_from`` as ``("secret" | "configmap", name)`` pairs."""
        return kuberay_env_sources(self.kuberay_env_from)


def kuberay_env_sources(value: str) -> list[tuple[str, str]]:
    """Parse ``secret:NAME,configmap:NAME`` (TUNELOOP_KUBERAY_ENV_FROM) into ``(kind, name)``
    pairs. Raises ValueError naming the bad entry and the expected form."""
    sources = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry:
            continue
        kind, _, name = entry.partition(":")
        kind, name = kind.strip().lower(), name.strip()
        if kind not in ("secret", "configmap") or not _OBJECT_NAME.fullmatch(name):
            raise ValueError(
                f"TUNELOOP_KUBERAY_ENV_FROM entry {entry!r} is not secret:NAME or configmap:NAME "
                "(NAME a Kubernetes object name); set it to e.g. "
                "'configmap:tuneloop-settings,secret:tuneloop-s3'"
            )
        sources.append((kind, name))
    return sources


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Build settings from ``environ`` (default: the process environment)."""
    if environ is None:
        return Settings()
    # pydantic parses the strings; Any because the keyword types differ per field.
    env: dict[str, Any] = {k[len("TUNELOOP_") :].lower(): v for k, v in environ.items() if k.startswith("TUNELOOP_")}
    return Settings(**env)
