"""Readiness: whether a request sent now would be answered, checked the way requests are.

`/health` is liveness (the process answers HTTP); `/ready` is 200 only if the engine answers
(the batcher's thread runs; vLLM lists its model) and every model name this server serves still
verifies: the base name (its lock), each alias, and each patch set served since start-up.
A set is checked through the resolver, so readiness and requests agree: a set verified less
than `recheck_s` ago is served as is by both, an older one is verified again (an expired index,
a revoked key, a yank) and refused by both.

A check is reused for `ready_interval_s` and never runs twice at once, so probes cannot turn
into load on the registry or on vLLM. The full reasons (URLs, paths, hints) go to the server
log, once per change; the JSON body says what is not ready with a stable code and a short reason.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from patchkit.serve.errors import APIError
from patchkit.serve.jobs import Engine
from patchkit.serve.patches import PatchResolver


@dataclass(frozen=True)
class Report:
    """One readiness check: what is not ready (empty: ready), and when it was made."""

    problems: tuple[dict[str, Any], ...]
    checked: float = field(default_factory=time.monotonic)
    checked_at: float = field(default_factory=time.time)

    @property
    def ready(self) -> bool:
        return not self.problems

    def age(self) -> float:
        return time.monotonic() - self.checked


class Readiness:
    """Runs readiness checks for one server, at most one at a time, each reused for `interval_s`."""

    def __init__(self, engine: Engine, resolver: PatchResolver, *, interval_s: float) -> None:
        self.engine = engine
        self.resolver = resolver
        self.interval_s = interval_s
        self.last: Report | None = None
        self._task: asyncio.Future[Report] | None = None
        self._logged: tuple[str, ...] = ()

    def fresh(self) -> Report | None:
        return self.last if self.last is not None and self.last.age() < self.interval_s else None

    async def check(self) -> Report:
        """A report at most `interval_s` old: the last one, or the one in progress, or a new one."""
        hit = self.fresh()
        if hit is not None:
            return hit
        return await asyncio.shield(self._start())

    def kick(self) -> None:
        """Start a check in the background if the last one is stale (for `/health`, which never waits)."""
        if self.fresh() is None:
            self._start()

    def _start(self) -> asyncio.Future[Report]:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        return self._task

    async def _run(self) -> Report:
        problems: list[dict[str, Any]] = []
        details: list[str] = []
        try:
            reason = await self.engine.probe()
        except Exception as exc:  # a probe that breaks is an engine that does not answer
            reason = f"{type(exc).__name__}: {exc}"
        if reason is not None:
            problems.append({"component": "engine", "engine": self.engine.kind, "code": "engine_unavailable",
                             "reason": f"the {self.engine.kind} engine does not answer"})
            details.append(f"engine: {reason}")
        for model in self.resolver.served():
            if self.resolver.cached(model) is not None:
                continue
            try:
                await asyncio.to_thread(self.resolver.resolve, model)
            except APIError as exc:
                problems.append({"component": "model", "model": model, "status": exc.status, "code": exc.code,
                                 "reason": exc.message})
                details.append(f"model {model!r}: {exc.code}: {exc.detail or exc.message}")
            except Exception as exc:  # a bug: not ready, said once in the log, and the check goes on
                problems.append({"component": "model", "model": model, "status": 500, "code": "internal_error",
                                 "reason": f"model {model!r}: the server failed to check it"})
                details.append(f"model {model!r}: internal_error: {type(exc).__name__}: {exc}")
        report = Report(tuple(problems))
        self.last = report
        self._log(tuple(details))
        return report

    def _log(self, details: tuple[str, ...]) -> None:
        if details == self._logged:
            return
        if details:
            for d in details:
                print(f"patchkit: serve: not ready: {d}", file=sys.stderr, flush=True)
        elif self._logged:
            print("patchkit: serve: ready again", file=sys.stderr, flush=True)
        self._logged = details


__all__ = ["Readiness", "Report"]
