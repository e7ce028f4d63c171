"""One local Ray cluster for the whole training test session (2 CPUs: enough for 2 workers)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """A started Ray (in this process); yields its GCS address for subprocess drivers."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
