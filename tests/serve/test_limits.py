"""A real `patchkit serve` on 127.0.0.1 against connections that never finish their body, and a model with no
chat template: what each client gets, and what `/ready` says meanwhile.

The server runs with 2 slots (max_batch 1 + max_queue 1), a 5 s body deadline and 40 connections at most.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from tests.runtime._support import Kit
from tests.serve._support import API_KEY, ServerProcess

pytestmark = [pytest.mark.torch, pytest.mark.slow]

BODY_TIMEOUT_S = 5.0
MAX_CONNECTIONS = 40
SLOW = 30  # more than the server's 2 slots many times over, fewer than its connection limit


@pytest.fixture(scope="module")
def server(serve_kit: Kit, serve_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("serve-limits")
    model = root / "no-template"
    shutil.copytree(serve_model, model)
    (model / "chat_template.jinja").unlink()  # a base model without a chat template
    config = root / "serve.toml"
    config.write_text(f'name = "tiny"\n[limits]\nmax_batch = 1\nmax_queue = 1\nbody_timeout_s = {BODY_TIMEOUT_S}\n'
                      f"max_connections = {MAX_CONNECTIONS}\n")
    proc = ServerProcess(["--model", model, "--config", config, "--trust", serve_kit.trust],
                         env={"PATCHKIT_HOME": str(root / "home"), "PATCHKIT_API_KEY": API_KEY, "PATCHKIT_NO_PROGRESS": "1"},
                         log=root / "server.log")
    try:
        yield proc
    finally:
        proc.stop()


def _slow_body(server: ServerProcess) -> socket.socket:
    """Headers announcing a 400-byte body, then 20 bytes of it, then nothing."""
    host, port = server.info["host"], server.info["port"]
    s = socket.create_connection((host, port), timeout=30)
    s.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEY}\r\n"
               "Content-Type: application/json\r\nContent-Length: 400\r\n\r\n").encode() + b'{"model": "tiny", "pr')
    return s


def _answer(s: socket.socket) -> bytes:
    """Everything the server sends on that connection until it closes it."""
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    finally:
        s.close()
    return data


def _complete(server: ServerProcess) -> int:
    with server.http() as h:
        return int(h.post("/v1/completions", json={"model": "tiny", "prompt": "The nurse said", "max_tokens": 4}).status_code)


def test_slow_body_connections_do_not_hold_slots(server: ServerProcess) -> None:
    """Attack (issue 21, finding 8): many connections send headers and part of a body, then stall, to take every
    slot; everyone else would get 429 while the server says it is fine."""
    attackers = [_slow_body(server) for _ in range(SLOW)]
    started = time.monotonic()
    time.sleep(0.5)  # every attacker's headers are in
    with server.http(api_key=None) as h:
        ready = h.get("/ready")
    assert ready.status_code == 200 and ready.json()["in_flight"] == 0, ready.text  # no slot is held, and it says so
    with ThreadPoolExecutor(2) as pool:  # both slots, in use at once, by clients that send whole bodies
        assert list(pool.map(lambda _: _complete(server), range(2))) == [200, 200]
    assert time.monotonic() - started < BODY_TIMEOUT_S  # ...while every attacker still holds its connection

    answers = [_answer(s) for s in attackers]
    waited = time.monotonic() - started
    for a in answers:
        head, _, body = a.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), a[:200]
        assert json.loads(body)["error"]["code"] == "request_timeout"
    assert BODY_TIMEOUT_S - 0.5 <= waited < BODY_TIMEOUT_S + 15
    assert server.metrics()['patchkit_requests_total{endpoint="/v1/completions",status="408"}'] == SLOW
    assert _complete(server) == 200


def test_connections_are_bounded(server: ServerProcess) -> None:
    """Past max_connections the server answers 503 at once instead of keeping sockets without end; the ones it keeps
    get 408 at the body deadline, and then it serves again."""
    attackers = []
    for _ in range(MAX_CONNECTIONS + 20):
        attackers.append(_slow_body(server))
        time.sleep(0.01)  # one at a time, so the server sees them in order
    time.sleep(0.3)
    refused, held = [], []
    for s in attackers:
        s.settimeout(0.05)
        try:
            first = s.recv(65536)
        except TimeoutError:
            held.append(s)
            continue
        refused.append(first)
        s.close()
    assert len(held) == MAX_CONNECTIONS - 1 and all(r.startswith(b"HTTP/1.1 503") for r in refused), (len(held), refused[:1])
    time.sleep(0.2)
    assert _complete(server) == 503  # the limit holds for everyone while the stalled connections are open
    for s in held:
        s.settimeout(30)
        assert _answer(s).startswith(b"HTTP/1.1 408")
    deadline = time.monotonic() + 15
    while _complete(server) != 200:
        assert time.monotonic() < deadline, "the server did not recover after the stalled bodies timed out"
        time.sleep(0.2)


def test_chat_without_a_chat_template_is_a_400(server: ServerProcess) -> None:
    """Issue 22, item 11: a model with no chat template answered a chat request with a 500 (a UsageError escaped)."""
    with pytest.raises(openai.BadRequestError) as info:
        server.client().chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=4)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "chat_template_missing" and body["param"] == "messages", body
    assert "/v1/completions" in body["message"] and "hint" not in body["message"]
    assert "Traceback" not in server.stderr()
    assert _complete(server) == 200  # text completions still work on that model


