"""Capacity and shutdown of a real `patchkit serve`: 429 when the queue is full, SIGTERM drains then exits 0."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.serve._support import ServerProcess

pytestmark = [pytest.mark.torch, pytest.mark.slow]

HOLD_S = 3.0  # how long each in-flight request should keep generating, whatever this machine's speed
MAX_LONG = 8000  # under the tiny model's 8192 positions


def _long_enough(client: Any, msg: list[dict[str, str]]) -> int:
    """Tokens that take about HOLD_S here: a busy shared CPU can be 20x slower than an idle one."""
    t0 = time.perf_counter()
    r = client.chat.completions.create(model="tiny", messages=msg, max_tokens=64, extra_body={"ignore_eos": True})
    per_token = (time.perf_counter() - t0) / r.usage.completion_tokens
    return max(64, min(MAX_LONG, int(HOLD_S / per_token)))


def test_queue_full_429_then_sigterm_drains_in_flight_and_exits_0(serve_model: Path, tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text(f'name = "tiny"\ndrain_timeout_s = 120\n[limits]\nmax_batch = 1\nmax_queue = 1\nmax_tokens = {MAX_LONG}\n')
    # No API key: fine on loopback, which is the default --host.
    server = ServerProcess(["--model", serve_model, "--config", config], env={"PATCHKIT_HOME": str(tmp_path / "home"),
                                                                             "PATCHKIT_NO_PROGRESS": "1"},
                           log=tmp_path / "server.log")
    try:
        client = server.client(api_key="none")
        msg = [{"role": "user", "content": "hello"}]
        long = _long_enough(client, msg)
        out: dict[str, Any] = {}

        def streamed() -> None:
            chunks = list(client.chat.completions.create(model="tiny", messages=msg, max_tokens=long, stream=True,
                                                         stream_options={"include_usage": True},
                                                         extra_body={"ignore_eos": True}))
            out["a"] = (chunks[-1].usage.completion_tokens, [c.choices[0].finish_reason for c in chunks if c.choices][-1])

        def whole() -> None:
            r = client.chat.completions.create(model="tiny", messages=msg, max_tokens=long, extra_body={"ignore_eos": True})
            out["b"] = (r.usage.completion_tokens, r.choices[0].finish_reason)

        a = threading.Thread(target=streamed)
        a.start()
        server.wait_metric("patchkit_running_requests", lambda v: v == 1)
        b = threading.Thread(target=whole)
        b.start()
        server.wait_metric("patchkit_in_flight_requests", lambda v: v == 2)
        assert server.metrics()["patchkit_queue_depth"] == 1  # b waits for the only batch slot
        with pytest.raises(openai.RateLimitError) as full:
            client.chat.completions.create(model="tiny", messages=msg, max_tokens=4)
        assert full.value.status_code == 429 and full.value.body["code"] == "queue_full"
        assert full.value.response.headers.get("retry-after")

        server.terminate()
        with server.http() as h:
            deadline = time.monotonic() + 30
            while h.get("/health").status_code != 503:
                assert time.monotonic() < deadline, "the server never reported draining"
                time.sleep(0.05)
            assert h.get("/health").json()["status"] == "draining"
        with pytest.raises(openai.APIStatusError) as gone:
            client.chat.completions.create(model="tiny", messages=msg, max_tokens=4)
        assert gone.value.status_code == 503 and gone.value.body["code"] == "draining"
        assert set(gone.value.body) == {"message", "type", "param", "code"}
        assert a.is_alive() or b.is_alive(), "the in-flight requests ended before the drain could be observed"

        a.join(120)
        b.join(120)
        assert out == {"a": (long, "length"), "b": (long, "length")}  # both finished in full after SIGTERM
        assert server.proc.wait(60) == 0
        assert "SIGTERM: draining 2 in-flight request(s)" in server.stderr()
    finally:
        server.stop()
