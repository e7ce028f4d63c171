"""Fixtures for the chart tests (helpers live in helm_chart.py)."""

from helm_chart import helm, rendered

__all__ = ["helm", "rendered"]
