"""The quota core: the check and its message, and the cached per-tenant counts."""

from __future__ import annotations

import pytest

from services.errors import Forbidden
from services.quotas import Quota, TenantCounts, files_quota
from services.settings import Settings


def test_check_allows_up_to_the_limit_and_says_what_to_do_beyond_it():
    quota = files_quota(Settings(tenant_max_files=3))
    quota.check(2)
    quota.check(0, 3)
    with pytest.raises(Forbidden) as exc:
        quota.check(3, owner="tenant 'acme' has")
    error = exc.value
    assert error.status == 403 and error.code == "quota_exceeded"
    assert error.message.startswith("quota exceeded: tenant 'acme' has 3 dataset files; the "
                                    "limit is 3 (TUNELOOP_TENANT_MAX_FILES).")
    assert "GET /v1/files" in error.message
    with pytest.raises(Forbidden, match="you have 1 dataset files and this request adds 5"):
        quota.check(1, 5)


def test_counts_are_read_once_per_ttl_and_follow_local_additions():
    reads: list[list[int]] = []
    stored = {1: 10, 2: 0}

    def count(session, tenant_ids):  # noqa: ANN001
        reads.append(sorted(tenant_ids))
        return {t: stored[t] for t in tenant_ids}

    now = [0.0]
    counts = TenantCounts(count, ttl_s=10, clock=lambda: now[0])
    assert counts.current(None, [1]) == {1: 10}  # type: ignore[arg-type]
    counts.add(1, 2)
    stored[1] = 12
    assert counts.current(None, [1, 2]) == {1: 12, 2: 0}  # type: ignore[arg-type]
    assert reads == [[1], [2]], "a fresh count is not read again"
    stored[1] = 20  # another process stored 8 more
    now[0] = 10
    assert counts.current(None, [1]) == {1: 20}  # type: ignore[arg-type]


def test_a_quota_with_a_custom_remedy():
    quota = Quota("things", 1, "TUNELOOP_X", "Free one.")
    with pytest.raises(Forbidden, match=r"the limit is 1 \(TUNELOOP_X\)\. Free one\.$"):
        quota.check(1)
