"""Fixtures for the chart tests (helpers live in tests/support/helm_chart.py)."""

from tests.support.helm_chart import helm, rendered

__all__ = ["helm", "rendered"]
