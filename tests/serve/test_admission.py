"""The admission service on its own (torch-free): who gets a slot, that a slot is given back once, and the drain.

The HTTP-level order (body before slot, 408, 429, 503) is pinned over real sockets in test_limits and
test_drain, and in process in test_app; here the objects behind it, and the old import paths.
"""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

import patchkit.serve
from patchkit.serve.admission import Admission
from patchkit.serve.config import Limits, ServeConfig
from patchkit.serve.errors import APIError
from patchkit.serve.metrics import Metrics
from patchkit.serve.state import ServerState
from patchkit.trust.store import TrustStore
from tests.helpers import write_fake_model
from tests.serve.test_app import NoLockResolver, ScriptedEngine

MAX_FUNCTION_LINES = 80


def _state(tmp_path: Path, *, max_batch: int = 1, max_queue: int = 1) -> ServerState:
    config = ServeConfig(name="tiny", limits=Limits(max_batch=max_batch, max_queue=max_queue))
    resolver = NoLockResolver(write_fake_model(tmp_path / "model"), config, name="tiny", trust=TrustStore.load(), registry=None)
    return ServerState(engine=ScriptedEngine(), resolver=resolver, config=config, metrics=Metrics(), name="tiny")


def _gauge(state: ServerState) -> float:
    value = state.metrics.in_flight._value.get()  # prometheus_client keeps a gauge's value here
    assert isinstance(value, float)
    return value


def test_full_server_refuses_with_429_and_counts_only_admitted(tmp_path: Path) -> None:
    state = _state(tmp_path, max_batch=1, max_queue=1)
    admission = Admission(state)
    slots = [admission.admit(), admission.admit()]
    with pytest.raises(APIError) as refused:
        admission.admit()
    assert refused.value.status == 429 and refused.value.code == "queue_full"
    assert state.in_flight == 2 and _gauge(state) == 2
    slots[0].release()
    assert state.in_flight == 1
    admission.admit().release()  # the freed place is taken again
    assert state.in_flight == 1 and _gauge(state) == 1


def test_a_slot_is_given_back_once_however_often_it_is_released(tmp_path: Path) -> None:
    state = _state(tmp_path)
    admission = Admission(state)
    kept, twice = admission.admit(), admission.admit()
    twice.release()
    twice.release()
    assert state.in_flight == 1, "a second release gave back another request's slot"
    kept.release()
    assert state.in_flight == 0 and _gauge(state) == 0


def test_draining_refuses_with_503_and_wait_idle_follows_the_slots(tmp_path: Path) -> None:
    async def scenario() -> tuple[bool, bool]:
        state = _state(tmp_path)
        state.idle = asyncio.Event()
        state.idle.set()
        admission = Admission(state)
        slot = admission.admit()
        state.draining = True
        with pytest.raises(APIError) as refused:
            admission.admit()
        assert refused.value.status == 503 and refused.value.code == "draining"
        busy = await state.wait_idle(0.05)  # the accepted request is still out
        asyncio.get_running_loop().call_later(0.05, slot.release)
        done = await state.wait_idle(5.0)
        return busy, done

    busy, done = asyncio.run(scenario())
    assert (busy, done) == (False, True)


def test_health_body_hides_internal_urls_and_reports_the_drain(tmp_path: Path) -> None:
    state = _state(tmp_path)
    state.engine.describe = lambda: {"engine": "vllm", "vllm_url": "http://10.0.0.7:8000"}  # type: ignore[method-assign]
    admission = Admission(state)
    assert admission.health_body(None)["status"] == "starting"
    state.draining = True
    body = admission.health_body(None)
    assert body["status"] == "draining" and body["ready"] is False
    assert "vllm_url" not in body and body["engine"] == "vllm"


def test_old_import_paths_still_name_the_same_objects() -> None:
    from patchkit.serve import app, completion, state

    assert app.ServerState is state.ServerState
    assert app.PATCH_HEADER == completion.PATCH_HEADER == "X-Patchkit-Patches"


def test_no_function_in_serve_is_over_80_lines() -> None:
    """Long procedures are named objects here (issue 24): a function that grows past the limit fails this test."""
    too_long: list[str] = []
    for path in sorted(Path(patchkit.serve.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.name}::{node.name} ({lines} lines)")
    assert not too_long, too_long
