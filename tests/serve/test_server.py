"""`patchkit serve` end to end: a real server process on 127.0.0.1, driven by the official `openai` client.

One server (module scope) serves a tiny model whose lock pins acme/a; a local file:// registry
holds acme/a, acme/b, acme/c, an untrusted acme/stranger and a tampered acme/tamp. Reference
outputs come from `patchkit.generate` on the same model and patches, one request at a time.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest

from patchkit.artifact.verify import VerificationPolicy
from patchkit.registry.client import publish
from patchkit.registry.customer import apply
from patchkit.runtime.resolve import resolve_patches
from tests.helpers import pk
from tests.runtime._support import Kit, home
from tests.serve._support import API_KEY, ServerProcess

pytestmark = [pytest.mark.torch, pytest.mark.slow]

PROMPTS = [
    "How do I bake bread at home?",
    "hello",
    "Write a short poem about the sea and the sky.",
    "The nurse said",
    "Tell me about the history of the printing press.",
    "thank you",
    "I'm sorry, but",
    "user assistant system: hello world",
]
SETS = {"plain": [], "tiny": ["acme/a"], "tiny+acme/b@1+acme/c@^1": ["acme/b", "acme/c"]}
MAX_TOKENS = 8000
LONG = 6000  # a generation that outlives whatever a test does meanwhile


@dataclass
class Stack:
    server: ServerProcess
    model: Path
    registry: str
    home: Path
    kit: Kit
    artifacts: dict[str, Path]

    loaded: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def reference(self, model_field: str, prompt: str, n: int, *, chat: bool = True) -> str:
        """What `patchkit generate` prints for this request alone (the same runtime calls, in process)."""
        import patchkit
        from patchkit.runtime.loader import build_patched

        if model_field not in self.loaded:
            specs = [self.artifacts[name] for name in SETS[model_field]]
            self.loaded[model_field] = build_patched(self.model, resolve_patches(self.model, specs, VerificationPolicy.build(self.kit.trust)),
                                                     device="cpu")
        m, tok = self.loaded[model_field]
        return str(patchkit.generate(m, tok, prompt, max_new_tokens=n, chat=chat))


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def stack(serve_kit: Kit, serve_model: Path, serve_patches: Callable[[str], Path],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("serve-e2e")
    home_dir, registry, model = root / "home", f"file://{root / 'registry'}", root / "tiny"
    shutil.copytree(serve_model, model)
    key = serve_kit.keys / "private.pem"
    artifacts = {n: serve_patches(n) for n in ("acme/a", "acme/b", "acme/c")}
    with home(home_dir):
        for art in artifacts.values():
            publish(art, key, registry=registry)
        stranger = serve_kit.patch(serve_model, name="acme/stranger", key=serve_kit.other_keys)
        publish(stranger, serve_kit.other_keys / "private.pem", registry=registry)
        publish(serve_kit.patch(serve_model, name="acme/tamp", seed=5), key, registry=registry)
        commits = root / "registry" / "acme" / "tamp" / "commits"
        record = json.loads(next(commits.glob("*.json")).read_text())
        _tamper(root / "registry" / "acme" / "tamp" / "blobs" / record["files"]["adapter_model.safetensors"])
        apply(["acme/a@1"], model, VerificationPolicy.build(serve_kit.trust), registry=registry)
    tampered = root / "tampered-a"
    shutil.copytree(artifacts["acme/a"], tampered)
    _tamper(tampered / "adapter_model.safetensors")
    config = root / "serve.toml"
    config.write_text(
        'name = "tiny"\n'
        f"[limits]\nmax_tokens = {MAX_TOKENS}\nmax_prompt_tokens = 64\nmax_body_bytes = 65536\n"
        f'[aliases]\nplain = []\nduo = ["acme/b@1", "acme/c@^1"]\ntampered = ["{tampered}"]\n'
    )
    env = {"PATCHKIT_HOME": str(home_dir), "PATCHKIT_API_KEY": API_KEY, "PATCHKIT_NO_PROGRESS": "1"}
    server = ServerProcess(["--model", model, "--config", config, "--trust", serve_kit.trust, "--registry", registry],
                           env=env, log=root / "server.log")
    try:
        yield Stack(server, model, registry, home_dir, serve_kit, artifacts)
    finally:
        server.stop()


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    """The OpenAI error object the client parsed; it must have all four fields."""
    body = exc.body
    assert isinstance(body, dict) and set(body) >= {"message", "type", "param", "code"}, body
    return body


def test_models_chat_stream_and_completion(stack: Stack) -> None:
    client = stack.server.client()
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == "tiny" and {"plain", "duo", "tampered"} <= set(ids)
    base = client.models.retrieve("tiny")
    assert [p["name"] for p in base.model_extra["patches"]] == ["acme/a"]  # the lock, verified at start-up

    raw = client.chat.completions.with_raw_response.create(
        model="tiny+acme/b@1+acme/c@^1", messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=20)
    reply = raw.parse()
    header = raw.headers["x-patchkit-patches"]
    usage = reply.usage.model_extra
    assert [p["name"] for p in usage["patches"]] == ["acme/b", "acme/c"]
    assert header == ",".join(f"{p['name']}@{p['version']}={p['digest']}" for p in usage["patches"])
    assert all(p["digest"].startswith("sha256:") for p in usage["patches"])
    assert usage["prefix_tokens"] == 7 + 3 and reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    text = reply.choices[0].message.content
    assert text == stack.reference("tiny+acme/b@1+acme/c@^1", PROMPTS[0], 20)
    assert reply.system_fingerprint and reply.system_fingerprint.startswith("pk-")

    chunks = list(client.chat.completions.create(
        model="duo", messages=[{"role": "user", "content": PROMPTS[0]}], max_tokens=20, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # the alias names the same patches, so the same digests and output
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [reply.choices[0].finish_reason]
    assert not chunks[-1].choices and chunks[-1].usage is not None  # the usage chunk comes last
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    assert [p["digest"] for p in chunks[-1].usage.model_extra["patches"]] == [p["digest"] for p in usage["patches"]]
    assert all(c.usage is None for c in chunks[:-1])

    done = client.completions.create(model="tiny", prompt=PROMPTS[3], max_tokens=16)
    assert done.object == "text_completion"
    assert done.choices[0].text == stack.reference("tiny", PROMPTS[3], 16, chat=False)
    assert [p["name"] for p in done.usage.model_extra["patches"]] == ["acme/a"]
    parts = list(client.completions.create(model="tiny", prompt=PROMPTS[3], max_tokens=16, stream=True))
    assert "".join(c.choices[0].text for c in parts) == done.choices[0].text


def test_eight_concurrent_requests_three_patch_sets_equal_solo(stack: Stack) -> None:
    client = stack.server.client()
    models = list(SETS)
    n = 24
    before = stack.server.metrics()

    def ask(i: int) -> str:
        r = client.chat.completions.create(model=models[i % 3], messages=[{"role": "user", "content": PROMPTS[i]}],
                                           max_tokens=n)
        return str(r.choices[0].message.content)

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, range(8)))
    for i, text in enumerate(got):
        assert text == stack.reference(models[i % 3], PROMPTS[i], n), (i, models[i % 3], PROMPTS[i])
    after = stack.server.metrics()
    one_row = after['patchkit_batch_rows_bucket{le="1.0"}'] - before.get('patchkit_batch_rows_bucket{le="1.0"}', 0)
    steps = after["patchkit_batch_rows_count"] - before.get("patchkit_batch_rows_count", 0)
    assert steps - one_row > 0, "the concurrent requests never shared a decoding step"
    a = next(k for k in after if k.startswith("patchkit_patch_requests_total") and 'patch="acme/a@1.0.0"' in k)
    assert after[a] - before.get(a, 0) >= 3


def test_same_as_the_generate_command(stack: Stack) -> None:
    """The CLI itself, once: `patchkit generate --patch B --patch C --no-lock` prints what the server returns."""
    client = stack.server.client()
    r = client.chat.completions.create(model="tiny+acme/b@1+acme/c@^1", messages=[{"role": "user", "content": PROMPTS[2]}],
                                       max_tokens=12)
    out = pk("generate", "--model", stack.model, "--patch", "acme/b@1", "--patch", "acme/c@^1", "--no-lock",
             "--trust", stack.kit.trust, "--registry", stack.registry, "--max-new-tokens", "12", "--json", PROMPTS[2],
             env={"PATCHKIT_HOME": str(stack.home)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["text"] == r.choices[0].message.content


def test_error_statuses_and_bodies(stack: Stack) -> None:
    client = stack.server.client()
    msg = [{"role": "user", "content": "hello"}]
    cases: list[tuple[int, str, Callable[[], Any]]] = [
        (400, "invalid_value", lambda: client.chat.completions.create(model="tiny", messages=msg, max_tokens=MAX_TOKENS + 1)),
        (400, "invalid_value", lambda: client.chat.completions.create(model="tiny", messages=msg, n=2)),
        (400, "invalid_value", lambda: client.chat.completions.create(model="tiny", messages=[])),
        (401, "invalid_api_key", lambda: stack.server.client(api_key="wrong").chat.completions.create(model="tiny", messages=msg)),
        (404, "model_not_found", lambda: client.chat.completions.create(model="gpt-4o", messages=msg)),
        (404, "model_not_found", lambda: client.chat.completions.create(model="tiny+acme/nope@1", messages=msg)),
        (404, "model_not_found", lambda: client.chat.completions.create(model="tiny+acme/a@9", messages=msg)),
        (404, "model_not_found", lambda: client.completions.create(model="tiny+/etc/passwd", prompt="x")),
        (413, "too_large", lambda: client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "sea " * 200}])),
    ]
    for status, code, call in cases:
        with pytest.raises(openai.APIStatusError) as info:
            call()
        assert info.value.status_code == status, (status, code, info.value)
        assert _error(info.value)["code"] == code, info.value.body
    with stack.server.http() as h:
        r = h.post("/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        r = h.post("/v1/completions", content=b'{"model": "tiny", "prompt": "' + b"x" * 70000 + b'"}')
        assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"
    with stack.server.http(api_key=None) as h:
        r = h.post("/v1/chat/completions", json={"model": "tiny", "messages": msg})
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert h.get("/metrics").status_code == 401
        assert h.get("/health").status_code == 200  # the load balancer's probe needs no key


def test_unverified_patches_are_never_served_and_change_nothing(stack: Stack) -> None:
    client = stack.server.client()
    msg = [{"role": "user", "content": "hello"}]
    models_before = client.models.list().model_dump()
    m0 = stack.server.metrics()
    refused = {"tampered": "patch_integrity_failed", "tiny+acme/tamp@1": "patch_integrity_failed",
               "tiny+acme/stranger@1": "patch_untrusted", "tiny+tampered": "patch_integrity_failed"}
    for model, code in refused.items():
        for _ in range(2):  # a refusal is not remembered as good, nor cached as bad: refused again from scratch
            with pytest.raises(openai.PermissionDeniedError) as info:
                client.chat.completions.create(model=model, messages=msg, max_tokens=4)
            assert info.value.status_code == 403 and _error(info.value)["code"] == code, (model, info.value.body)
            assert _error(info.value)["param"] == "model"
    assert client.models.list().model_dump() == models_before
    m1 = stack.server.metrics()
    for gauge in ("patchkit_patch_sets_verified", "patchkit_prefix_cache_entries"):
        assert m1[gauge] == m0[gauge], gauge
    assert m1['patchkit_patch_refusals_total{code="patch_untrusted"}'] - m0.get('patchkit_patch_refusals_total{code="patch_untrusted"}', 0) == 2
    assert not any("stranger" in k or "tamp" in k for k in m1 if k.startswith("patchkit_patch_requests"))
    ok = client.chat.completions.create(model="tiny", messages=msg, max_tokens=4)  # the server still serves
    assert ok.choices[0].finish_reason in ("stop", "length")


def test_client_disconnect_mid_stream_frees_the_slot(stack: Stack) -> None:
    client = stack.server.client()
    before = stack.server.metrics()
    cancelled = 'patchkit_generations_total{reason="cancelled"}'
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=LONG,
                                            stream=True, extra_body={"ignore_eos": True})
    seen = 0
    for chunk in stream:
        seen += bool(chunk.choices and chunk.choices[0].delta.content)
        if seen >= 3:
            break
    stream.close()  # the client goes away mid-stream
    stack.server.wait_metric(cancelled, lambda v: v >= before.get(cancelled, 0) + 1)
    stack.server.wait_metric("patchkit_running_requests", lambda v: v == 0)
    stack.server.wait_metric("patchkit_in_flight_requests", lambda v: v == 0)
    after = stack.server.metrics()
    assert after["patchkit_completion_tokens_total"] - before["patchkit_completion_tokens_total"] < LONG
