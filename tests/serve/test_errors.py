"""What a client learns from an error: a stable code and a short reason, never the server's paths or CLI advice.

Every refusal the server can give is triggered in process (the real app and the real resolver over a
`file://` registry, a trust store and a PATCHKIT_HOME in the test's directory, the server's cwd
holding patches of its own); no body may name any of those places, nor tell the client to run
`patchkit …`. The operator's log keeps the full reason.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncGenerator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import patchkit.registry.index
from patchkit._internal.clock import now_utc
from patchkit.errors import UsageError
from patchkit.registry.client import publish
from patchkit.registry.keylog import revoke, rotate
from patchkit.serve.app import ServerState, asgi
from patchkit.serve.config import Limits, ServeConfig
from patchkit.serve.jobs import FINISH_ERROR, Job, Piece
from patchkit.serve.metrics import Metrics
from patchkit.serve.patches import PatchResolver
from patchkit.trust.keys import generate_keypair
from patchkit.trust.store import TrustStore
from tests.helpers import write_fake_model
from tests.runtime._support import Kit
from tests.serve._support import asgi_call
from tests.serve.test_app import HANG, ScriptedEngine

CHAT = "/v1/chat/completions"
TEXT = "/v1/completions"
KEY = "k-0123456789abcdef"


class LeakyEngine(ScriptedEngine):
    """Fails the way real engines do, with the server's own paths in its exception texts."""

    def __init__(self, end: str, secret_path: Path, *, chat_template: bool = True) -> None:
        super().__init__(end)
        self.secret = str(secret_path)
        self.chat_template = chat_template

    def encode(self, prompt: str | Sequence[dict[str, str]], *, chat: bool) -> list[int]:
        if chat and not self.chat_template:  # what patchkit.lm.chat.format_chat raises
            raise UsageError("this tokenizer has no chat template", "use plain text (chat=False), or drop the system prompt")
        return super().encode(prompt, chat=chat)

    async def stream(self, job: Job) -> AsyncGenerator[Piece, None]:
        if self.end == FINISH_ERROR:
            yield Piece("", 0, FINISH_ERROR, error=f"OSError: cannot read {self.secret}/model.safetensors",
                        prompt_tokens=len(job.prompt_ids), extra={"status": 502})
            return
        if self.end == "raise":
            raise RuntimeError(f"CUDA error in {self.secret}/kernels.cu")
        async for p in super().stream(job):
            yield p


def _chat(model: str, **extra: Any) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "a b"}], **extra}).encode()


@pytest.fixture
def world(tmp_path: Path, pk_home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A vendor's registry with acme/good, an untrusted publisher's other/x, and a server whose cwd holds drafts."""
    model = write_fake_model(tmp_path / "srv" / "model")
    kit = Kit.create(tmp_path / "srv" / "kit")
    registry = tmp_path / "srv" / "registry"
    url = f"file://{registry}"
    publish(kit.patch(model, name="acme/good"), kit.keys / "private.pem", registry=url)
    publish(kit.patch(model, name="other/x", key=kit.other_keys), kit.other_keys / "private.pem", registry=url)
    tampered = kit.patch(model, name="acme/tamp")
    (tampered / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    cwd = tmp_path / "srv" / "cwd"
    (cwd / "dist").mkdir(parents=True)
    shutil.copytree(kit.patch(model, name="acme/draft"), cwd / "dist" / "draft")  # signed, trusted, never published
    monkeypatch.chdir(cwd)
    aliases = {"safe": ["acme/good@1"], "tampered": [str(tampered)], "foreign": [str(kit.patch(None, name="acme/wrong"))]}
    return {"model": model, "kit": kit, "url": url, "registry": registry, "cwd": cwd, "aliases": aliases,
            "secrets": [str(pk_home), str(kit.trust), str(registry), str(cwd), str(tmp_path), str(model), str(tampered)]}


def _state(world: dict[str, Any], engine: ScriptedEngine, *, registry: str | None = None, **limits: Any) -> ServerState:
    config = ServeConfig(name="tiny", aliases=world["aliases"], recheck_s=600, limits=Limits(**limits))
    resolver = PatchResolver(world["model"], config, name="tiny", trust=TrustStore.load(world["kit"].trust),
                             registry=registry or world["url"])
    return ServerState(engine=engine, resolver=resolver, config=config, metrics=Metrics(), name="tiny", api_key=KEY)


AUTH = [("authorization", f"Bearer {KEY}")]


def _ask(state: ServerState, path: str, body: bytes, **kw: Any) -> tuple[int, dict[str, Any]]:
    status, _, raw = asyncio.run(asgi_call(asgi(state), "POST", path, body, headers=kw.pop("headers", AUTH), **kw))
    return status, json.loads(raw)


def _assert_clean(body: dict[str, Any], secrets: list[str]) -> None:
    text = json.dumps(body)
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, text
    for s in secrets:
        assert s not in text, f"the body shows the server's path {s}: {text}"
    for advice in ("patchkit ", "--no-lock", "hint:", "trust add", "file://"):
        assert advice not in text, f"the body gives the client server-side advice ({advice!r}): {text}"


def test_error_bodies_show_no_server_paths_or_cli_advice(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    secrets = world["secrets"]
    seen: dict[str, int] = {}

    def expect(state: ServerState, path: str, body: bytes, status: int, code: str, **kw: Any) -> None:
        got, doc = _ask(state, path, body, **kw)
        assert (got, doc["error"]["code"]) == (status, code), doc
        _assert_clean(doc, secrets)
        seen[code] = got

    ok = _state(world, ScriptedEngine(), body_timeout_s=0.3)
    assert _ask(ok, CHAT, _chat("safe"))[0] == 200  # the world works: a published, trusted patch is served
    expect(ok, CHAT, _chat("gpt-4o"), 404, "model_not_found")
    expect(ok, CHAT, _chat("tiny+acme/missing@1"), 404, "model_not_found")
    expect(ok, CHAT, _chat("tiny+dist/draft"), 404, "model_not_found")  # a directory in the server's cwd
    expect(ok, CHAT, _chat("tiny+./dist/draft"), 404, "model_not_found")
    expect(ok, CHAT, _chat("tiny+other/x@1"), 403, "patch_untrusted")
    expect(ok, CHAT, _chat("tampered"), 403, "patch_integrity_failed")
    expect(ok, CHAT, _chat("foreign"), 400, "patch_incompatible")
    expect(ok, CHAT, _chat("tiny+acme/good@1+acme/good@1"), 400, "invalid_value")  # one patch twice
    expect(ok, CHAT, b"{not json", 400, "invalid_json")
    expect(ok, CHAT, _chat("tiny", max_tokens=10**6), 400, "invalid_value")
    expect(ok, CHAT, _chat("tiny", n=2), 400, "invalid_value")
    expect(ok, TEXT, json.dumps({"model": "tiny", "prompt": "x " * 5000}).encode(), 413, "too_large")
    expect(ok, CHAT, _chat("tiny"), 401, "invalid_api_key", headers=[])
    expect(ok, "/v1/nope", _chat("tiny"), 404, "not_found")
    expect(ok, CHAT, b"x" * 2_000_000, 413, "too_large")
    expect(ok, CHAT, b'{"model": "tiny", "mess', 408, "request_timeout", stall=True, length=200)

    secret = world["cwd"] / "weights"
    expect(_state(world, LeakyEngine(FINISH_ERROR, secret)), CHAT, _chat("tiny"), 502, "upstream_failed")
    expect(_state(world, LeakyEngine("raise", secret)), CHAT, _chat("tiny"), 500, "internal_error")
    expect(_state(world, LeakyEngine("stop", secret, chat_template=False)), CHAT, _chat("tiny"), 400, "chat_template_missing")

    full = _state(world, ScriptedEngine(HANG), max_batch=1, max_queue=0)
    full.in_flight = full.capacity  # every slot taken
    expect(full, CHAT, _chat("tiny"), 429, "queue_full")
    full.in_flight, full.draining = 0, True
    expect(full, CHAT, _chat("tiny"), 503, "draining")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    expect(_state(world, ScriptedEngine(), registry="hf://"), CHAT, _chat("tiny+acme/good@1"), 502,
           "registry_unavailable")

    later = now_utc() + timedelta(days=400)  # past every index's expiry
    with monkeypatch.context() as m:
        m.setattr(patchkit.registry.index, "now_utc", lambda: later)
        expect(_state(world, ScriptedEngine()), CHAT, _chat("safe"), 403, "index_expired")

    kit = world["kit"]
    generate_keypair(kit.root / "new")
    rotate(kit.keys / "private.pem", kit.root / "new" / "private.pem", ["acme/*"], registry=world["url"])
    revoke(kit.keys / "public.pem", "laptop stolen", ["acme"], signer_path=kit.root / "new" / "private.pem", registry=world["url"])
    expect(_state(world, ScriptedEngine()), CHAT, _chat("safe"), 403, "patch_revoked")

    assert len(seen) == 18, seen
    status, _, raw = asyncio.run(asgi_call(asgi(ok), "GET", "/v1/models", headers=AUTH))
    assert status == 200 and not any(x in raw.decode() for x in secrets)  # an alias's directory is not shown either
    log = capsys.readouterr().err
    assert "patchkit trust add" in log and "laptop stolen" in log and str(world["registry"]) in log  # the operator still learns why
    assert str(secret) in log  # the engine's own text


def test_chat_template_that_refuses_the_messages_is_a_400(tmp_path: Path) -> None:
    """A template's own `raise_exception` (e.g. roles that must alternate) is the client's 400, as vLLM answers it."""
    from jinja2.exceptions import TemplateError

    from tests.serve.test_app import NoLockResolver

    class Strict(ScriptedEngine):
        def encode(self, prompt: str | Sequence[dict[str, str]], *, chat: bool) -> list[int]:
            if chat:
                raise TemplateError("Conversation roles must alternate user/assistant/user/assistant/...")
            return super().encode(prompt, chat=chat)

    config = ServeConfig(name="tiny")
    resolver = NoLockResolver(write_fake_model(tmp_path / "model"), config, name="tiny", trust=TrustStore.load(), registry=None)
    state = ServerState(engine=Strict(), resolver=resolver, config=config, metrics=Metrics(), name="tiny")
    status, doc = _ask(state, CHAT, _chat("tiny"), headers=[])
    assert status == 400 and doc["error"]["code"] == "invalid_value" and doc["error"]["param"] == "messages"
    assert doc["error"]["message"] == ("the model's chat template refused these messages: "
                                       "Conversation roles must alternate user/assistant/user/assistant/...")
    assert state.in_flight == 0
