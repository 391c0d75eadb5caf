"""What one server shares between its routes, its guard and its drain: one `ServerState` per process.

The state is data (the engine, the resolver, the limits, the metrics, and the count of requests
in flight) plus the server's lifetime (`serving`). The rules that change the count, which
request gets a slot and when, are the admission service's (`admission`); the drain on SIGTERM
(`runner`) only flips `draining` and waits here for the count to reach zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from patchkit.serve.config import ServeConfig
from patchkit.serve.jobs import Engine
from patchkit.serve.metrics import Metrics
from patchkit.serve.patches import PatchResolver
from patchkit.serve.readiness import Readiness


@dataclass
class ServerState:
    """Everything a route needs; one per server."""

    engine: Engine
    resolver: PatchResolver
    config: ServeConfig
    metrics: Metrics
    name: str
    api_key: str | None = None
    draining: bool = False
    in_flight: int = 0
    started: float = field(default_factory=time.time)
    idle: asyncio.Event | None = None
    readiness: Readiness = field(init=False)  # follows the engine and the resolver above

    def __post_init__(self) -> None:
        self.readiness = Readiness(self.engine, self.resolver, interval_s=self.config.ready_interval_s)

    @property
    def capacity(self) -> int:
        return self.config.limits.max_batch + self.config.limits.max_queue

    @contextlib.asynccontextmanager
    async def serving(self, _app: object) -> AsyncIterator[None]:
        """The app's lifespan: the engine runs, and /health has a first report, before the first request."""
        self.idle = asyncio.Event()
        self.idle.set()
        self.engine.start()
        await self.readiness.check()
        try:
            yield
        finally:
            await self.engine.aclose()

    async def wait_idle(self, timeout: float) -> bool:
        """After SIGTERM: True once every accepted request has been answered, False at the timeout."""
        if self.in_flight == 0 or self.idle is None:
            return self.in_flight == 0
        try:
            await asyncio.wait_for(self.idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


__all__ = ["ServerState"]
