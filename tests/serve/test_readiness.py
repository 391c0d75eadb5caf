"""`/health` is liveness and `/ready` readiness; neither says "ok" while requests would fail.

In process (the real app and resolver, a scripted engine whose probe the test controls): the engine
going away, and a configured alias whose registry index expired, turn `/ready` 503 with what is not
ready, and `/health` says so (still 200: the process is alive). The vLLM case, with a real gateway
and a stub vLLM that goes down, is in test_vllm.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import patchkit.registry.index
from patchkit._internal.clock import now_utc
from patchkit.registry.client import publish
from patchkit.serve.app import ServerState, asgi
from patchkit.serve.config import ServeConfig
from patchkit.serve.metrics import Metrics
from patchkit.serve.patches import PatchResolver
from patchkit.trust.store import TrustStore
from tests.helpers import write_fake_model
from tests.runtime._support import Kit
from tests.serve._support import asgi_call
from tests.serve.test_app import NoLockResolver, ScriptedEngine


class ProbedEngine(ScriptedEngine):
    """A scripted engine whose readiness probe answers what the test says."""

    def __init__(self) -> None:
        super().__init__()
        self.down: str | None = None
        self.probes = 0

    async def probe(self) -> str | None:
        self.probes += 1
        return self.down


def _get(app: Any, path: str) -> tuple[int, dict[str, Any]]:
    status, _, raw = asyncio.run(asgi_call(app, "GET", path))
    return status, json.loads(raw)


def _chat(app: Any, model: str) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "a b"}]}).encode()
    status, _, raw = asyncio.run(asgi_call(app, "POST", "/v1/chat/completions", body))
    return status, json.loads(raw)


def test_ready_follows_the_engine_and_health_does_not_say_ok_while_it_is_down(tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    engine = ProbedEngine()
    config = ServeConfig(name="tiny", ready_interval_s=0.05)
    resolver = NoLockResolver(write_fake_model(tmp_path / "model"), config, name="tiny", trust=TrustStore.load(), registry=None)
    state = ServerState(engine=engine, resolver=resolver, config=config, metrics=Metrics(), name="tiny")
    app = asgi(state)

    status, body = _get(app, "/ready")
    assert status == 200 and body["status"] == "ok" and body["ready"] is True and body["not_ready"] == []
    assert _get(app, "/health")[1]["status"] == "ok"

    engine.down = "the vLLM server at http://10.0.0.7:8001 does not answer /v1/models: ConnectError"
    time.sleep(0.06)
    status, body = _get(app, "/ready")
    assert status == 503 and body["status"] == "not_ready" and body["ready"] is False
    assert body["not_ready"] == [{"component": "engine", "engine": "scripted", "code": "engine_unavailable",
                                  "reason": "the scripted engine does not answer"}]
    status, body = _get(app, "/health")
    assert status == 200 and body["live"] is True and body["status"] == "not_ready" and body["ready"] is False
    assert "10.0.0.7" not in json.dumps(body)  # the upstream's address is the operator's business
    assert "10.0.0.7" in capsys.readouterr().err  # ...and in the operator's log

    probes = engine.probes
    for _ in range(20):
        _get(app, "/ready")
    assert engine.probes == probes  # within ready_interval_s a check is reused: probes cannot load the engine

    engine.down = None
    time.sleep(0.06)
    assert _get(app, "/ready")[0] == 200
    assert "ready again" in capsys.readouterr().err
    state.draining = True
    status, body = _get(app, "/health")
    assert _get(app, "/ready")[0] == 503 and status == 503 and body["status"] == "draining"


def test_ready_reports_an_alias_whose_index_expired_as_requests_see_it(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's case: the bare name still served, an alias to a registry patch refused (expired index):
    /ready is 503 naming the alias with the code requests get; /health is not "ok"."""
    model = write_fake_model(tmp_path / "model")
    kit = Kit.create(tmp_path / "kit")
    url = f"file://{tmp_path / 'registry'}"
    publish(kit.patch(model, name="acme/tox"), kit.keys / "private.pem", registry=url, expires_days=1)
    config = ServeConfig(name="tiny", aliases={"safe": ["acme/tox@1"]}, recheck_s=0.05, ready_interval_s=0.05)
    resolver = PatchResolver(model, config, name="tiny", trust=TrustStore.load(kit.trust), registry=url)
    state = ServerState(engine=ProbedEngine(), resolver=resolver, config=config, metrics=Metrics(), name="tiny")
    app = asgi(state)
    assert _get(app, "/ready")[0] == 200 and _chat(app, "safe")[0] == 200

    later = now_utc() + timedelta(days=2)
    monkeypatch.setattr(patchkit.registry.index, "now_utc", lambda: later)  # the index's expiry has passed
    time.sleep(0.06)
    status, body = _get(app, "/ready")
    assert status == 503
    assert [(p["model"], p["status"], p["code"]) for p in body["not_ready"]] == [("safe", 403, "index_expired")]
    assert _get(app, "/health")[1]["status"] == "not_ready"
    assert _chat(app, "safe")[1]["error"]["code"] == "index_expired"  # what /ready said requests get
    assert _chat(app, "tiny")[0] == 200  # the bare name (no lock here) is still served, and /ready named only the alias
