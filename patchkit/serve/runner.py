"""uvicorn's Server, whose first SIGTERM/SIGINT drains instead of dropping in-flight requests."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

if TYPE_CHECKING:
    from patchkit.serve.state import ServerState


class DrainingServer(uvicorn.Server):
    """Drain on the first signal: 503 for new requests, wait for in-flight ones, then exit 0.

    uvicorn's own handler would close the listening socket and stop at once; a load balancer
    in front would see refused connections instead of a 503 it can route around. The signal is
    not re-raised after shutdown (uvicorn's default), so a drained server exits with status 0.
    """

    def __init__(self, config: uvicorn.Config, state: ServerState, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self.state = state
        self.on_ready = on_ready
        self._drain_task: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._loop = asyncio.get_running_loop()
        if not self.should_exit:
            self.on_ready()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_task is not None or self._loop is None:
            self.should_exit = self.force_exit = True  # a second signal, or one before start-up ended
            return
        print(f"patchkit: {signal.Signals(sig).name}: draining {self.state.in_flight} in-flight request(s), then exiting",
              file=sys.stderr, flush=True)
        self._loop.call_soon_threadsafe(self._begin_drain)

    def _begin_drain(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        state = self.state
        state.draining = True
        state.metrics.draining.set(1)
        if not await state.wait_idle(state.config.drain_timeout_s):
            print(f"patchkit: drain timeout ({state.config.drain_timeout_s:g} s): closing {state.in_flight} request(s)",
                  file=sys.stderr, flush=True)
        self.should_exit = True
