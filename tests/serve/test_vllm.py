"""`--engine vllm`: the gateway sends vLLM `prompt_embeds` = cat(patch prefix, embed(chat-templated prompt)).

vLLM's wheel is CUDA-only, so a stub speaks its Completions endpoint on 127.0.0.1: it decodes the
base64 `torch.save` tensor, checks shape and dtype, and records it; the test checks that the first
rows are exactly the patch and the rest exactly the embedding rows of the chat-templated prompt.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.runtime._support import Kit
from tests.serve._support import API_KEY, ServerProcess

pytestmark = [pytest.mark.torch, pytest.mark.slow]

STUB_MODEL = "stub-llm"
HIDDEN = 64


class VLLMStub:
    """Just enough of `vllm serve --enable-prompt-embeds`: GET /v1/models, POST /v1/completions (SSE)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": STUB_MODEL, "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "no such route"}})

            def do_POST(self) -> None:
                import torch

                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/completions" or body.get("model") != STUB_MODEL:
                    self._json(404, {"error": {"message": f"model {body.get('model')!r} does not exist"}})
                    return
                if "prompt" in body or not isinstance(body.get("prompt_embeds"), str):
                    self._json(400, {"error": {"message": "send prompt_embeds, not prompt"}})
                    return
                tensor = torch.load(io.BytesIO(base64.b64decode(body["prompt_embeds"], validate=True)), weights_only=True)
                if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2 or tensor.shape[1] != HIDDEN:
                    self._json(400, {"error": {"message": f"prompt_embeds must be (seq_len, {HIDDEN})"}})
                    return
                stub.seen.append({"tensor": tensor, "body": {k: v for k, v in body.items() if k != "prompt_embeds"}})
                text = ["ok ", "rows=", str(tensor.shape[0])]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for i, t in enumerate(text):
                    finish = "length" if i == len(text) - 1 else None
                    chunk = {"id": "cmpl-stub", "object": "text_completion", "model": STUB_MODEL,
                             "choices": [{"index": 0, "text": t, "finish_reason": finish}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                usage = {"prompt_tokens": tensor.shape[0], "completion_tokens": len(text), "total_tokens": tensor.shape[0] + 3}
                self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def stub() -> Iterator[VLLMStub]:
    s = VLLMStub()
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def gateway(serve_kit: Kit, serve_model: Path, serve_patches: Callable[[str], Path], stub: VLLMStub,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, VLLMStub]]:
    root = tmp_path_factory.mktemp("vllm-gateway")
    (root / "home" / "registry").mkdir(parents=True)  # an empty local registry: an unknown ref is a 404 (absent: 502)
    config = root / "serve.toml"
    config.write_text(f'name = "tiny"\n[aliases]\na = ["{serve_patches("acme/a")}"]\n'
                      f'bc = ["{serve_patches("acme/b")}", "{serve_patches("acme/c")}"]\n')
    server = ServerProcess(["--model", serve_model, "--config", config, "--trust", serve_kit.trust, "--engine", "vllm",
                            "--vllm-url", stub.url],
                           env={"PATCHKIT_HOME": str(root / "home"), "PATCHKIT_API_KEY": API_KEY, "PATCHKIT_NO_PROGRESS": "1"},
                           log=root / "server.log")
    try:
        yield server, stub
    finally:
        server.stop()


def _tensor(path: Path, key: str) -> Any:
    from safetensors.torch import load_file

    return load_file(str(path))[key]


def test_prompt_embeds_are_prefix_then_templated_prompt_and_refusals_stay_local(gateway: tuple[ServerProcess, VLLMStub], serve_model: Path,
                                                         serve_patches: Callable[[str], Path]) -> None:
    import torch

    from patchkit.lm.loading import load_tokenizer
    from patchkit.runtime.generation import encode

    server, stub = gateway
    client = server.client()
    embedding = _tensor(serve_model / "model.safetensors", "model.embed_tokens.weight")
    tok = load_tokenizer(serve_model)
    msg = [{"role": "user", "content": "How do I bake bread at home?"}]
    ids = encode(tok, [msg], chat=True)["input_ids"][0]
    prefixes = {
        "tiny": torch.zeros(0, HIDDEN),
        "a": _tensor(serve_patches("acme/a") / "adapter_model.safetensors", "prompt_embeddings"),
        "bc": torch.cat([_tensor(serve_patches(n) / "adapter_model.safetensors", "prompt_embeddings") for n in ("acme/b", "acme/c")]),
    }
    for model, prefix in prefixes.items():
        raw = client.chat.completions.with_raw_response.create(model=model, messages=msg, max_tokens=7, seed=3)
        reply = raw.parse()
        sent = stub.seen[-1]
        tensor, body = sent["tensor"], sent["body"]
        n = prefix.shape[0]
        assert tensor.dtype == embedding.dtype and tensor.shape == (n + len(ids), HIDDEN), model
        assert torch.equal(tensor[:n], prefix.to(tensor.dtype)), f"{model}: the first rows are not the patch"
        assert torch.equal(tensor[n:], embedding[ids]), f"{model}: the other rows are not the templated prompt"
        assert body["model"] == STUB_MODEL and body["max_tokens"] == 7 and body["seed"] == 3 and body["stream"] is True
        assert reply.choices[0].message.content == f"ok rows={n + len(ids)}"
        assert reply.choices[0].finish_reason == "length"
        usage = reply.usage.model_extra
        assert reply.usage.prompt_tokens == len(ids) and usage["prefix_tokens"] == n
        assert raw.headers["x-patchkit-patches"] == (",".join(f"{p['name']}@{p['version']}={p['digest']}" for p in usage["patches"])
                                                     or "none")

    chunks = list(client.chat.completions.create(model="bc", messages=msg, max_tokens=5, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == f"ok rows={10 + len(ids)}"
    assert chunks[-1].usage is not None and [p["name"] for p in chunks[-1].usage.model_extra["patches"]] == ["acme/b", "acme/c"]

    done = client.completions.create(model="a", prompt="The nurse said", max_tokens=4, stop=["\n"])
    raw_ids = encode(tok, ["The nurse said"], chat=False)["input_ids"][0]
    assert torch.equal(stub.seen[-1]["tensor"][4:], embedding[raw_ids]) and stub.seen[-1]["body"]["stop"] == ["\n"]
    assert done.choices[0].text == f"ok rows={4 + len(raw_ids)}"

    before = len(stub.seen)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="tiny+acme/nope@1", messages=msg)
    assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong").chat.completions.create(model="tiny", messages=msg)
    assert len(stub.seen) == before  # refusals happen at the gateway: nothing reached vLLM


def test_upstream_failures_become_502_pieces(stub: VLLMStub, serve_model: Path) -> None:
    import asyncio

    import torch

    from patchkit.serve.jobs import FINISH_ERROR, Job
    from patchkit.serve.patches import PatchSet
    from patchkit.serve.vllm import VLLMEngine, load_input_embeddings

    embedding = load_input_embeddings(serve_model)
    assert torch.equal(embedding, _tensor(serve_model / "model.safetensors", "model.embed_tokens.weight"))

    async def last_piece(url: str, served: str | None) -> Any:
        engine = VLLMEngine.load(serve_model, url, served_model=served, max_concurrent=2, timeout_s=10)
        engine.start()
        pieces = [p async for p in engine.stream(Job((1, 2, 3), PatchSet("x", ()), max_tokens=3))]
        await engine.aclose()
        return pieces[-1]

    wrong_model = asyncio.run(last_piece(stub.url, "not-served-here"))  # vLLM answers 404
    assert wrong_model.finish_reason == FINISH_ERROR and wrong_model.extra["status"] == 502 and "404" in wrong_model.error
    down = asyncio.run(last_piece("http://127.0.0.1:9", None))  # nothing listens there
    assert down.finish_reason == FINISH_ERROR and down.extra["status"] == 502


def test_ready_follows_vllm_and_health_does_not_say_ok_while_it_is_down(serve_kit: Kit, serve_model: Path,
                                                                        tmp_path: Path) -> None:
    """Issue 22, item 9: with vLLM down every request is a 502, yet /health said 200 "ok"."""
    stub = VLLMStub()
    config = tmp_path / "serve.toml"
    config.write_text('name = "tiny"\nready_interval_s = 0.2\n')
    server = ServerProcess(["--model", serve_model, "--config", config, "--trust", serve_kit.trust, "--engine", "vllm",
                            "--vllm-url", stub.url],
                           env={"PATCHKIT_HOME": str(tmp_path / "home"), "PATCHKIT_API_KEY": API_KEY, "PATCHKIT_NO_PROGRESS": "1"},
                           log=tmp_path / "server.log")
    try:
        msg = [{"role": "user", "content": "hello"}]
        with server.http(api_key=None) as h:
            assert h.get("/ready").status_code == 200 and h.get("/health").json()["status"] == "ok"
        assert server.client().chat.completions.create(model="tiny", messages=msg, max_tokens=3).choices[0].message.content
        stub.close()  # vLLM goes away
        time.sleep(0.3)
        with server.http(api_key=None) as h:
            ready = h.get("/ready")
            health = h.get("/health")
        assert ready.status_code == 503, ready.text
        assert [(p["component"], p["code"]) for p in ready.json()["not_ready"]] == [("engine", "engine_unavailable")]
        assert health.status_code == 200 and health.json()["status"] == "not_ready" and health.json()["live"] is True
        with pytest.raises(openai.APIStatusError) as info:  # what /ready announced
            server.client().chat.completions.create(model="tiny", messages=msg, max_tokens=3)
        assert info.value.status_code == 502 and isinstance(info.value.body, dict) and info.value.body["code"] == "upstream_failed"
        for text in (ready.text, health.text, json.dumps(info.value.body)):
            assert stub.url not in text and "127.0.0.1" not in text  # the upstream's address stays in the log
        assert stub.url in server.stderr()
    finally:
        server.stop()


def test_the_vllm_engine_refuses_a_gated_patch_rather_than_apply_it_to_every_prompt(serve_kit: Kit, serve_model: Path,
                                                                                   tmp_path: Path) -> None:
    from patchkit.artifact.build import build_artifact
    from patchkit.artifact.sign import sign_artifact
    from patchkit.artifact.verify import VerificationPolicy
    from patchkit.errors import CompatibilityError
    from patchkit.runtime.resolve import resolve_patches
    from patchkit.serve.jobs import Job
    from patchkit.serve.patches import PatchSet
    from patchkit.serve.vllm import VLLMEngine
    from tests.runtime._support import gated_source

    hidden = int(json.loads((serve_model / "config.json").read_text())["hidden_size"])
    src = gated_source(tmp_path / "src", weight=[0.1] * hidden, bias=0.0, threshold=0.0)
    art = tmp_path / "art"
    build_artifact(src, art, name="acme/gated", version="1.0.0", domain="harmfulness", base_model=serve_model)
    sign_artifact(art, serve_kit.keys / "private.pem")
    loaded = resolve_patches(serve_model, [art], VerificationPolicy.build(serve_kit.trust))
    engine = VLLMEngine.load(serve_model, "http://127.0.0.1:9", served_model="m", max_concurrent=1, timeout_s=1)
    with pytest.raises(CompatibilityError, match="cannot route prompts through a gate"):
        engine.prompt_embeds(Job((1, 2, 3), PatchSet("g", tuple(loaded)), max_tokens=3))
    assert engine.prompt_embeds(Job((1, 2, 3), PatchSet("x", ()), max_tokens=3)).shape[0] == 3
