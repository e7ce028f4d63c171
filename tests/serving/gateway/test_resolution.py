"""Model resolution: the cache of (tenant, model string) pairs stays bounded whatever clients
send (endless spellings of one version)."""

from __future__ import annotations

from services.adapter_intake import register_adapter_dir
from services.tenants import create_tenant
from serving.gateway.resolution import Resolver


def test_the_resolution_cache_is_bounded(platform, peft_adapter):
    with platform.store.write() as session:
        tenant = create_tenant(session, "acme")
        session.flush()
        session.expunge(tenant)
    register_adapter_dir(platform, tenant, "support", peft_adapter)
    resolver = Resolver(platform.store, platform.base_model_name, ttl_s=60, max_entries=3)
    spellings = ["support", "support@v1", "support@v01", "support@v001", "support@v0001"]
    targets = {resolver.resolve(tenant, model).public_model for model in spellings}
    assert targets == {"support@v1"}  # every spelling is the same version...
    assert len(resolver._cache) <= 3  # ...and the cache did not grow with them
