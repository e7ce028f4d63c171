"""A kmock Kubernetes API emulator on 127.0.0.1, served from a background event loop.

kmock is asyncio-based while the official ``kubernetes`` client is synchronous, so the emulator
runs in its own thread and tests talk to it over real HTTP, like the runner does in a cluster.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import kmock
import pytest
from kubernetes import client as k8s

RAYJOBS = "ray.io/v1/rayjobs"


@dataclass
class Cluster:
    """The running emulator, its URL and an API client pointed at it."""

    emulator: kmock.KubernetesEmulator
    url: str
    api: k8s.CustomObjectsApi
    loop: asyncio.AbstractEventLoop

    def react(self, setup: Callable[[kmock.KubernetesEmulator], Any]) -> None:
        """Run ``setup(emulator)`` on the emulator's loop (kmock's DSL is not thread-safe)."""

        async def call() -> None:
            setup(self.emulator)

        asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout=10)

    def install_rayjob_crd(self) -> None:
        """Make discovery serve rayjobs.ray.io, as an installed KubeRay operator would."""
        self.react(
            lambda emu: emu.resources.__setitem__(
                RAYJOBS, emu.ResourceInfo(kind="RayJob", namespaced=True)
            )
        )


def _serve(box: dict[str, Any], ready: threading.Event) -> None:
    async def main() -> None:
        async with kmock.KubernetesEmulator() as emu, kmock.Server(emu) as server:
            # kmock answers creates with 200; the real API server (and the client) use 201.
            # Low priority, so a test's own reaction (403, 404) wins over it.
            (emu**-1)[kmock.action.CREATE] << 201 << (lambda request: request.data)
            box.update(emu=emu, url=str(server.url).rstrip("/"), loop=asyncio.get_running_loop())
            box["stop"] = asyncio.Event()
            ready.set()
            await box["stop"].wait()

    try:
        asyncio.run(main())
    finally:
        ready.set()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A fresh emulator per test, with a CustomObjectsApi pointed at it."""
    box: dict[str, Any] = {}
    ready = threading.Event()
    thread = threading.Thread(target=_serve, args=(box, ready), name="kmock", daemon=True)
    thread.start()
    assert ready.wait(timeout=30) and "url" in box, "kmock emulator did not start"
    config = k8s.Configuration()
    config.host = box["url"]
    api_client = k8s.ApiClient(config)
    try:
        yield Cluster(box["emu"], box["url"], k8s.CustomObjectsApi(api_client), box["loop"])
    finally:
        api_client.close()
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(timeout=10)
