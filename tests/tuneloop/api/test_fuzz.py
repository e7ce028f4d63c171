"""Every route, driven with hostile values, answers 4xx (or 2xx), never a 500.

A table of hostile values (huge, negative and 64-bit-overflowing numbers, NaN and Infinity, lone
surrogates, NUL, deep nesting, path tricks, wrong types) goes into every path parameter, query
parameter, JSON field and multipart field of every route of the real app, on SQLite and on
PostgreSQL. The engine is down (nothing listens at its URL): inference requests that pass
validation answer 503 "unavailable", which is the one 5xx allowed; anything else >= 500 fails.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from services.platform import Platform
from services.tenants import create_key, create_tenant
from tests.support.api import ADMIN_HEADERS
from tuneloop.app import create_app
from tuneloop.state import ServeOptions

HOSTILE_VALUES: list[Any] = [
    None, True, -1, 0, 2**63, -(2**63) - 1, 2**64 + 1, 10**30, 1.5, 1e308, -1e308,
    "", " ", "\n", "a" * 70_000, "x\u0000y", "../../etc/passwd", "name@v" + "9" * 30,
    "name@v-1", "%00", "\u202e\u0661\u0662", "😀" * 100, "{text:>200000000}", "{text!x}",
    [], [None], [[[[]]]], {}, {"a": {"b": {"c": {}}}}, ["a"] * 5000,
]
HOSTILE_PATH = ["a" * 300, "..", "%2e%2e%2f", "name@v" + "9" * 40, "-1", "99999999999999999999999",
                "%00", "%ED%A0%80", "%F0%9F%98%80", "a%0A", "' OR 1=1 --"]
# JSON texts a JSON encoder cannot produce: raw NaN / Infinity, lone surrogates, 5,000-digit
# integers, deep nesting, not UTF-8.
RAW_BODIES: list[bytes] = [
    b"", b"null", b"[]", b'"text"', b"{", b'{"model": NaN}', b'{"model": Infinity}',
    b'{"model": "\\ud800"}', b'{"version": ' + b"1" * 5000 + b"}", b"[" * 100_000,
    b'{"a":' * 50_000, b"\xff\xfe\xfd", b'{"data": [' + b"{}," * 20_000 + b"{}]}",
]
FIELDS = [
    # inference
    "model", "messages", "prompt", "input", "max_tokens", "n", "stream", "stream_options",
    "temperature", "logprobs", "stop",
    # feedback
    "response_id", "rating", "label", "correction", "comment", "id", "data",
    # registry and policy
    "name", "version", "reason", "enabled", "drift_threshold", "min_feedback",
    "schedule_hours", "cooldown_hours", "max_concurrent_jobs_total",
    # jobs
    "training_file", "validation_file", "hyperparameters", "suffix", "seed", "task", "labels",
    "prompt_template", "auto_promote", "metadata", "integrations",
]


def _tar(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _safetensors(entry: dict, data: bytes = b"\x00" * 16) -> bytes:
    header = json.dumps({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": entry})
    return len(header).to_bytes(8, "little") + header.encode() + data


_LORA_CONFIG = b'{"peft_type": "LORA", "r": 8, "target_modules": ["q_proj"]}'
FILES = [b"", b"\x00" * 1000, b"\xff\xfe garbage", b'{"messages": "x"}\n' * 50,
         b"text,label\n" + b'"' + b"a" * 200_000 + b'",x\n',  # a CSV field over 128 KiB
         b"text,label\nok,a\n" + b"b" * 140_000 + b",c\n",
         _tar({"adapter_config.json": b'{"r": -4, "lora_alpha": NaN}',
               "adapter_model.safetensors": b"\xff" * 64}),
         _tar({"adapter_config.json": b"[" * 10_000}),
         # safetensors headers: offsets that are not numbers, past the end, a header longer
         # than the file; tar members that collide (a file, then a path inside it)
         _tar({"adapter_config.json": _LORA_CONFIG, "adapter_model.safetensors": _safetensors(
             {"dtype": "F32", "shape": [8, 576], "data_offsets": ["0", "16"]})}),
         _tar({"adapter_config.json": _LORA_CONFIG, "adapter_model.safetensors": _safetensors(
             {"dtype": "F32", "shape": [-8, 576], "data_offsets": [0, 2**70]})}),
         _tar({"adapter_config.json": _LORA_CONFIG,
               "adapter_model.safetensors": (2**40).to_bytes(8, "little") + b"{}"}),
         _tar({"adapter_config.json": _LORA_CONFIG,
               "adapter_config.json/adapter_model.safetensors": b"x"})]


@pytest.fixture
def api(make_settings, database_url) -> Iterator[tuple[TestClient, dict]]:
    settings = make_settings(database_url=database_url, engine_urls=["http://127.0.0.1:9"],
                             tenant_rate_per_s=1e6, tenant_max_concurrency=1000)
    platform = Platform.open(settings)
    with platform.store.write() as s:
        create_tenant(s, "acme")
        key = create_key(s, "acme").key
    with TestClient(create_app(platform=platform, serve=ServeOptions()),
                    raise_server_exceptions=False) as client:
        yield client, {"Authorization": f"Bearer {key}"}
    platform.close()


def _routes(client: TestClient) -> list[APIRoute]:
    return [r for r in client.app.routes if isinstance(r, APIRoute)]  # type: ignore[attr-defined]


def _path(route: APIRoute, value: str) -> str:
    path = route.path
    for param in route.param_convertors:
        path = path.replace(f"{{{param}}}", value).replace(f"{{{param}:path}}", value)
    return path


def _ok(response: Any, what: str) -> None:
    if response.status_code == 503 and response.json()["error"]["code"] in (
            "service_unavailable", "engine_starting"):
        return  # valid input, engine down
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"


def test_no_input_gives_a_500(api):
    client, tenant = api
    checked = 0
    for route in _routes(client):
        headers = ADMIN_HEADERS if route.path.startswith("/admin") else tenant
        for method in route.methods:
            samples = HOSTILE_PATH if route.param_convertors else ["x"]
            for value in samples:
                url = _path(route, value)
                r = client.request(method, url, headers=headers)
                _ok(r, f"{method} {url}")
                checked += 1
                for query in route.dependant.query_params:
                    for hostile in HOSTILE_VALUES:
                        q = json.dumps(hostile) if not isinstance(hostile, str) else hostile
                        if len(q) > 2000:  # beyond what HTTP clients send in a URL
                            continue
                        r = client.request(method, url, headers=headers, params={query.name: q})
                        _ok(r, f"{method} {url}?{query.name}={q[:40]!r}")
                        checked += 1
            if method not in ("POST", "PUT"):
                continue
            url = _path(route, "x")
            multipart = route.path in ("/v1/files", "/v1/adapters/{name}/versions")
            if multipart:
                for data in FILES:
                    for form in ({}, {"purpose": "fine-tune"}, {"task": "classification",
                                 "labels": '["a"' + ",[" * 5000 + "]"},
                                 {"metrics": "NaN", "lineage": "[" * 10_000, "purpose": "\x00"}):
                        r = client.post(url, headers=headers, data=form,
                                        files={"file": ("f.jsonl", data, "application/octet-stream")})
                        _ok(r, f"POST {url} multipart {form!r:.60} {data[:20]!r}")
                        checked += 1
                continue
            for raw in RAW_BODIES:
                r = client.request(method, url, headers={**headers, "Content-Type": "application/json"},
                                   content=raw)
                _ok(r, f"{method} {url} raw {raw[:40]!r}")
                checked += 1
            for field in FIELDS:
                for hostile in HOSTILE_VALUES:
                    r = client.request(method, url, headers=headers, json={field: hostile})
                    _ok(r, f"{method} {url} {field}={hostile!r:.60}")
                    checked += 1
    assert checked > 5000  # every route was driven
