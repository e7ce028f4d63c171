"""Route tests run on both stores: here ``platform`` is ``api_platform`` (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest


@pytest.fixture
def platform(api_platform):
    return api_platform
