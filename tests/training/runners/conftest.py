"""Fixtures for the job runner tests: the kmock Kubernetes API emulator."""

from kmock_cluster import cluster

__all__ = ["cluster"]
