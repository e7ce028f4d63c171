"""HTTP helpers for route tests: the admin header, tenant keys and JSONL uploads."""

from __future__ import annotations

import json

ADMIN_HEADERS = {"Authorization": "Bearer admin-test-key"}


def tenant_key(client, name: str) -> dict:  # noqa: ANN001
    """Create tenant ``name`` through the admin API; returns its Authorization header."""
    assert client.post("/admin/tenants", json={"name": name}, headers=ADMIN_HEADERS).status_code == 201
    r = client.post(f"/admin/tenants/{name}/keys", headers=ADMIN_HEADERS)
    assert r.status_code == 201
    return {"Authorization": f"Bearer {r.json()['key']}"}


def classification_lines(n: int = 12) -> bytes:
    """``n`` classification examples as JSONL bytes, labels alternating neg/pos."""
    return "".join(json.dumps({"text": f"example text number {i}",
                               "label": "pos" if i % 2 else "neg"}) + "\n"
                   for i in range(n)).encode()


def chat_lines(n: int = 4) -> bytes:
    """``n`` distinct chat examples (one user turn, one assistant reply) as JSONL bytes."""
    return "".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                            {"role": "assistant", "content": "a"}]}) + "\n"
                   for i in range(n)).encode()


def upload(client, headers, data: bytes, filename: str = "data.jsonl", **form):  # noqa: ANN001
    """POST ``data`` to ``/v1/files`` for fine-tuning; extra form fields from ``form``."""
    return client.post("/v1/files", headers=headers, files={"file": (filename, data)},
                       data={"purpose": "fine-tune", **form})
