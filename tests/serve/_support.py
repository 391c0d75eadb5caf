"""Helpers for the serve tests: a tiny model with a long context, and a server run as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SERVE_POSITIONS = 8192


def make_serve_model(out: Path, *, positions: int = SERVE_POSITIONS, seed: int = 0) -> Path:
    """tests.tiny's Llama (hidden 64, 2 layers, byte-level BPE), with `positions` positions."""
    import torch
    import transformers as tf

    from tests.tiny import make_config, make_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(out)
    config = make_config("llama", len(tok))
    config.max_position_embeddings = positions
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    model.save_pretrained(out, safe_serialization=True)
    return out

# -- a server run as a real process ----------------------------------------------------------

API_KEY = "test-key-0123456789"
START_TIMEOUT_S = 120.0


class ServerProcess:
    """`python -m patchkit serve … --port 0 --json`, started and waited for; the ready line says the port."""

    def __init__(self, args: Sequence[str | os.PathLike[str]], *, env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "patchkit", "serve", "--port", "0", "--json", "--threads", "1", *map(str, args)],
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, env={**os.environ, **env})
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(self.proc.stdout.readline() if self.proc.stdout else ""),
                                  daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        if not ready or not ready[0].strip():
            self.stop(timeout=5)
            raise RuntimeError(f"patchkit serve did not start: {self.stderr()[-3000:]}")
        self.info: dict[str, Any] = json.loads(ready[0])
        self.url: str = self.info["url"]
        self.base_url = self.url + "/v1"

    def stderr(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def client(self, api_key: str = API_KEY, **kw: Any) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, timeout=kw.pop("timeout", 120.0), **kw)

    def http(self, api_key: str | None = API_KEY) -> Any:
        import httpx2

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx2.Client(base_url=self.url, headers=headers, timeout=60.0)

    def metrics(self) -> dict[str, float]:
        """Every sample of /metrics as `name{label="v",…}` -> value."""
        from prometheus_client.parser import text_string_to_metric_families

        with self.http() as h:
            text = h.get("/metrics").text
        out: dict[str, float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = float(s.value)
        return out

    def wait_metric(self, name: str, pred: Any, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        value = self.metrics().get(name, 0.0)
        while not pred(value):
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} stayed at {value}")
            time.sleep(0.05)
            value = self.metrics().get(name, 0.0)
        return value

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return int(self.proc.returncode)


# -- the app in process, over raw ASGI ---------------------------------------------------------

async def asgi_call(app: Any, method: str, path: str, body: bytes = b"", *, headers: Sequence[tuple[str, str]] = (),
                    stall: bool = False, length: int | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request over ASGI: status, headers, body (499: no answer).

    `stall`: the client sends `body` and then nothing more, with a Content-Length of `length`
    (a body that never finishes); otherwise the body comes whole and the client waits for the answer.
    """
    import asyncio

    size = length if length is not None else len(body)
    raw_headers = [(b"content-length", str(size).encode()), (b"content-type", b"application/json"),
                   *((k.lower().encode(), v.encode()) for k, v in headers)] if method != "GET" else \
        [(k.lower().encode(), v.encode()) for k, v in headers]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5),
             "server": ("127.0.0.1", 80), "headers": raw_headers}
    done = asyncio.Event()
    sent = False
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": stall}
        await done.wait()  # a stalled body never continues; either way the client waits for its answer
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()

    try:
        await app(scope, receive, send)
    except RuntimeError:
        pass  # an unhandled error: the app answered 500 and re-raised
    start = next((m for m in messages if m["type"] == "http.response.start"), None)
    status = int(start["status"]) if start else 499
    out_headers = {k.decode().lower(): v.decode() for k, v in start["headers"]} if start else {}
    return status, out_headers, b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
