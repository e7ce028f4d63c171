"""Model references: ``name`` or ``name@vN`` with N a version the store can hold."""

from __future__ import annotations

import pytest

from services.errors import InvalidInput
from services.registry import MAX_VERSION, parse_model_ref


@pytest.mark.parametrize(("ref", "parsed"), [
    ("support", ("support", None)), ("support@v3", ("support", 3)), ("support@7", ("support", 7)),
    (f"support@v{MAX_VERSION}", ("support", MAX_VERSION))])
def test_references_parse(ref, parsed):
    assert parse_model_ref(ref) == parsed


@pytest.mark.parametrize(("ref", "words"), [
    ("support@v" + "9" * 30, "beyond"),  # reached SQLite as an integer overflow: a 500
    (f"support@v{MAX_VERSION + 1}", "beyond"),
    ("support@v" + "1" * 5000, "beyond"),  # past int()'s 4300-digit limit
    ("support@v3\n", "is not 'name'"),
    ("support@v\u0663", "is not 'name'"),  # an Arabic-Indic digit: int() takes it, we do not
    ("", "is not 'name'"),
])
def test_bad_references_are_400_naming_the_form(ref, words):
    with pytest.raises(InvalidInput, match=words):
        parse_model_ref(ref)


def test_huge_versions_never_reach_the_store(platform):
    from services import registry
    from services.errors import NotFound
    from services.store.models import Adapter
    from services.tenants import create_tenant

    with platform.store.write() as s:
        tenant = create_tenant(s, "acme")
        s.add(Adapter(tenant_id=tenant.id, name="bot", task="chat"))
    with platform.store.write() as s:
        tenant = s.merge(tenant)
        with pytest.raises(InvalidInput, match="beyond"):
            registry.resolve(s, tenant, "bot@v" + "9" * 30)  # was an integer overflow: a 500
        with pytest.raises(NotFound, match="no version"):
            registry.promote(s, tenant, "bot", 2**70)
        with pytest.raises(NotFound, match="no version"):
            registry.get_version(s, tenant, "bot", -(2**70))
