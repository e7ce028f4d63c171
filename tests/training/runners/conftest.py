"""Fixtures for the job runner tests: the kmock Kubernetes API emulator."""

from tests.support.kmock_cluster import cluster

__all__ = ["cluster"]
