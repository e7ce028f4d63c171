"""The job runner ``settings.training_runner`` names, built on demand (no Ray or Kubernetes import
until a job needs it)."""

from __future__ import annotations

from services.settings import Settings
from training.runners.base import JobRunner


def make_runner(settings: Settings) -> JobRunner:
    """``local``: a Ray on this machine (or the one at ``ray_address``); ``ray``: the cluster's
    Ray Jobs API at ``ray_address``; ``kuberay``: RayJobs in ``kuberay_namespace``."""
    if settings.training_runner == "ray":
        from training.runners.ray_cluster import RayClusterRunner

        assert settings.ray_address  # Settings refuses training_runner='ray' without it
        return RayClusterRunner(settings.ray_address)
    if settings.training_runner == "kuberay":
        from training.runners.kuberay import KubeRayRunner

        return KubeRayRunner.from_config(
            namespace=settings.kuberay_namespace, image=settings.kuberay_image,
            env_from=settings.kuberay_env_sources,
            worker_node_selector=settings.kuberay_worker_node_selector,
            worker_tolerations=settings.kuberay_worker_tolerations,
            model_claim=settings.kuberay_model_claim,
            model_mount_path=settings.kuberay_model_mount_path)
    from training.runners.local import LocalRayRunner

    return LocalRayRunner(settings.data_dir.resolve() / "jobs" / "logs",
                          ray_address=settings.ray_address)


def survives_restart(settings: Settings) -> bool:
    """Whether runs outlive the tuneloop process (a cluster keeps its jobs; a local runner
    keeps no record of its subprocesses)."""
    return settings.training_runner in ("ray", "kuberay")
