"""Fixtures for job tests: a tenant on the SQLite ``platform`` (both from tests/conftest.py and
tests/support: ``platform``, ``peft_adapter``)."""

from __future__ import annotations

import pytest


@pytest.fixture
def tenant(platform):
    from services.tenants import create_tenant

    with platform.store.write() as session:
        row = create_tenant(session, "acme")
    return row
