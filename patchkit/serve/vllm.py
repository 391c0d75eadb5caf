"""`--engine vllm`: patchkit as a gateway in front of a vLLM server started with `--enable-prompt-embeds`.

vLLM >= 0.10 has no prompt adapters; it takes `prompt_embeds` in a Completions request: base64
of `torch.save` of a `(seq_len, hidden)` tensor. For each request the gateway builds exactly the
input the runtime and training use: the prompt's tokens (chat template applied here, as
`patchkit generate` does), their rows of the model's input-embedding matrix, and the patch set's
prefix in front of them all (ahead of BOS), i.e. `PatchedModel.embed_with_prefix`. vLLM's Chat API
is not used: its `prompt_embeds` part sits inside the chat template, which is not where a patch
was trained.

The gateway needs only the tokenizer and the embedding matrix, read as one tensor out of the
safetensors shards; the model's other weights stay on the vLLM side.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

import httpx2
import torch

from patchkit.errors import CompatibilityError, InvalidInputError, RegistryError
from patchkit.lm.loading import load_tokenizer
from patchkit.runtime.compose import compose_prefix
from patchkit.runtime.generation import encode
from patchkit.serve.jobs import FINISH_ERROR, FINISH_LENGTH, FINISH_STOP, Engine, Job, Piece

MAX_UPSTREAM_LINE = 1024 * 1024
PROBE_TIMEOUT_S = 5.0  # readiness: a vLLM that takes longer to list its models is not answering
EMBED_SUFFIXES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")


def _embedding_name(model_dir: Path) -> str | None:
    """The checkpoint name of the input-embedding weight, from a weightless (meta) instance of the model."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        cfg = AutoConfig.from_pretrained(str(model_dir))
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(cfg)  # type: ignore[no-untyped-call]
    except (OSError, ValueError, KeyError):
        return None
    weight = skeleton.get_input_embeddings().weight
    return next((n for n, p in skeleton.named_parameters() if p is weight), None)


def load_input_embeddings(model_dir: Path) -> torch.Tensor:
    """The `[vocab, hidden]` input-embedding matrix, read alone from the model's safetensors files."""
    from safetensors import safe_open

    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise InvalidInputError(f"{model_dir} has no .safetensors weights", "convert the model to safetensors")
    wanted = _embedding_name(model_dir)
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            keys = list(st.keys())
            name = wanted if wanted in keys else next((k for k in keys if k.endswith(EMBED_SUFFIXES)), None)
            if name is not None:
                tensor: torch.Tensor = st.get_tensor(name)
                if tensor.dim() != 2:
                    raise InvalidInputError(f"{f}: {name} is not a 2-D embedding matrix", "check the model directory")
                return tensor
    raise InvalidInputError(f"cannot find the input-embedding weight in {model_dir}", "check the model directory")


def encode_embeds(tensor: torch.Tensor) -> str:
    """vLLM's `prompt_embeds` wire format: base64 of `torch.save` of the tensor."""
    buf = io.BytesIO()
    torch.save(tensor.contiguous().clone(), buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


class VLLMEngine(Engine):
    kind = "vllm"

    def __init__(self, tokenizer: Any, embedding: torch.Tensor, url: str, *, served_model: str | None, max_concurrent: int,
                 timeout_s: float, client: httpx2.AsyncClient | None = None) -> None:
        self.tokenizer = tokenizer
        self.embedding = embedding
        self.url = url.rstrip("/")
        self.served_model = served_model
        self.max_concurrent = max_concurrent
        self.timeout_s = timeout_s
        self._client = client
        self._slots: asyncio.Semaphore | None = None
        self._running = 0
        self._waiting = 0
        self._prefixes: dict[tuple[str, ...], torch.Tensor | None] = {}

    @classmethod
    def load(cls, model_dir: Path, url: str, *, served_model: str | None, max_concurrent: int, timeout_s: float) -> VLLMEngine:
        if not url.startswith(("http://", "https://")):
            raise InvalidInputError(f"--vllm-url {url!r} is not an http(s) URL", "e.g. --vllm-url http://gpu-node:8000")
        return cls(load_tokenizer(model_dir), load_input_embeddings(model_dir), url, served_model=served_model,
                   max_concurrent=max_concurrent, timeout_s=timeout_s)

    @property
    def vocab_size(self) -> int:
        return min(len(self.tokenizer), int(self.embedding.shape[0]))

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    def describe(self) -> dict[str, Any]:
        return {"engine": self.kind, "vllm_url": self.url, "vllm_model": self.served_model,
                "dtype": str(self.embedding.dtype).replace("torch.", "")}

    def encode(self, prompt: str | Sequence[dict[str, str]], *, chat: bool) -> list[int]:
        enc = encode(self.tokenizer, [prompt], chat=chat)
        return [int(t) for t in enc["input_ids"][0].tolist()]

    def prompt_embeds(self, job: Job) -> torch.Tensor:
        """cat(prefix, embed(ids)): `(num_virtual_tokens + len(prompt), hidden)` in the model's dtype."""
        key = job.patch_set.key
        gated = [p.ref for p in job.patch_set.patches if p.gate is not None]
        if gated:  # vLLM takes the prompt's embeddings as they are: no pass of the bare model decides the route
            raise CompatibilityError(f"{', '.join(gated)} is gated, and the vllm engine cannot route prompts through a gate",
                                     "serve gated patches with the local engine (--engine local)")
        if key not in self._prefixes:
            self._prefixes[key] = compose_prefix(job.patch_set.patches, dtype=self.embedding.dtype)
        prefix = self._prefixes[key]
        rows = self.embedding[torch.tensor(job.prompt_ids, dtype=torch.long)]
        return rows if prefix is None else torch.cat([prefix, rows], dim=0)

    def start(self) -> None:
        self._slots = asyncio.Semaphore(self.max_concurrent) if self._slots is None else self._slots

    async def _http(self) -> httpx2.AsyncClient:
        if self._client is None:
            self._client = httpx2.AsyncClient(timeout=httpx2.Timeout(self.timeout_s, connect=10.0))
        if self.served_model is None:
            self.served_model = await self._discover_model(self._client)
        return self._client

    async def _discover_model(self, client: httpx2.AsyncClient) -> str:
        try:
            r = await client.get(f"{self.url}/v1/models")
            r.raise_for_status()
            data = r.json()["data"]
            return str(data[0]["id"])
        except (httpx2.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise RegistryError(f"cannot list the models of the vLLM server at {self.url}: {exc}",
                                "check --vllm-url, or set vllm_model in serve.toml") from None

    async def probe(self) -> str | None:
        """The vLLM server answers `/v1/models` (within PROBE_TIMEOUT_S) and lists the model requests go to."""
        client = self._client
        if client is None:
            client = self._client = httpx2.AsyncClient(timeout=httpx2.Timeout(self.timeout_s, connect=10.0))
        try:
            r = await client.get(f"{self.url}/v1/models", timeout=min(PROBE_TIMEOUT_S, self.timeout_s))
            r.raise_for_status()
            served = [str(m["id"]) for m in r.json()["data"]]
        except (httpx2.HTTPError, ValueError, KeyError, TypeError) as exc:
            return f"the vLLM server at {self.url} does not answer /v1/models: {type(exc).__name__}: {exc}"
        if not served:
            return f"the vLLM server at {self.url} serves no model"
        if self.served_model is not None and self.served_model not in served:
            return f"the vLLM server at {self.url} does not serve {self.served_model!r} (it serves {', '.join(served)})"
        return None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def payload(self, job: Job, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "prompt_embeds": encode_embeds(self.prompt_embeds(job)),
                                "max_tokens": job.max_tokens, "temperature": job.temperature, "top_p": job.top_p,
                                "stream": True, "stream_options": {"include_usage": True}}
        if job.seed is not None:
            body["seed"] = job.seed
        if job.stop:
            body["stop"] = list(job.stop)
        if job.ignore_eos:
            body["ignore_eos"] = True
        if job.min_tokens:
            body["min_tokens"] = job.min_tokens
        return body

    async def stream(self, job: Job) -> AsyncGenerator[Piece, None]:
        if self._slots is None:
            self.start()
        assert self._slots is not None
        prompt = len(job.prompt_ids)
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        self._running += 1
        try:
            try:
                client = await self._http()
            except RegistryError as exc:
                yield Piece("", 0, FINISH_ERROR, error=exc.one_line(), prompt_tokens=prompt, extra={"status": 502})
                return
            assert self.served_model is not None
            async for piece in self._relay(client, job, self.served_model, prompt):
                yield piece
        finally:
            self._running -= 1
            self._slots.release()

    async def _relay(self, client: httpx2.AsyncClient, job: Job, model: str, prompt: int) -> AsyncGenerator[Piece, None]:
        """Forward one request and turn vLLM's completion chunks into pieces (closing us closes the upstream)."""
        generated = 0
        finish: str | None = None
        try:
            async with client.stream("POST", f"{self.url}/v1/completions", json=self.payload(job, model)) as resp:
                if resp.status_code != 200:
                    detail = (await resp.aread())[:2000].decode("utf-8", "replace")
                    yield Piece("", 0, FINISH_ERROR, error=f"vLLM answered {resp.status_code}: {detail}", prompt_tokens=prompt,
                                extra={"status": 502})
                    return
                async for line in resp.aiter_lines():
                    if len(line) > MAX_UPSTREAM_LINE:
                        raise ValueError("an upstream event is too long")
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    if "error" in event:
                        yield Piece("", generated, FINISH_ERROR, error=f"vLLM: {event['error']}", prompt_tokens=prompt,
                                    extra={"status": 502})
                        return
                    usage = event.get("usage")
                    if usage:
                        generated = int(usage.get("completion_tokens", generated))
                    for choice in event.get("choices") or []:
                        text = str(choice.get("text") or "")
                        finish = choice.get("finish_reason") or finish
                        if not usage:
                            generated += 1 if text else 0
                        if text:
                            yield Piece(text, generated, None, prompt_tokens=prompt)
        except (httpx2.HTTPError, ValueError) as exc:
            yield Piece("", generated, FINISH_ERROR, error=f"vLLM at {self.url}: {exc}", prompt_tokens=prompt, extra={"status": 502})
            return
        reason = FINISH_LENGTH if finish == "length" else FINISH_STOP
        yield Piece("", generated, reason, prompt_tokens=prompt)
