"""The batching engine in process: mixed patch sets in one batch give each request's solo output."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from patchkit.artifact.verify import VerificationPolicy
from patchkit.runtime.resolve import LoadedPatch, resolve_patches
from patchkit.serve.jobs import Job, Piece
from patchkit.serve.patches import PatchSet
from tests.runtime._support import Kit

pytestmark = [pytest.mark.torch]

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


def _sets(kit: Kit, model: Path, patches: Callable[[str], Path]) -> list[list[LoadedPatch]]:
    """Three patch sets: none, one patch, two patches (prefix lengths 0, 4 and 7+3)."""
    return [resolve_patches(model, specs, VerificationPolicy.build(kit.trust))
            for specs in ([], [patches("acme/a")], [patches("acme/b"), patches("acme/c")])]


def _solo(model: Path, kit: Kit, loaded: list[LoadedPatch], prompt: str, n: int) -> str:
    import patchkit
    from patchkit.runtime.loader import build_patched

    m, tok = build_patched(model, loaded, device="cpu")
    return str(patchkit.generate(m, tok, prompt, max_new_tokens=n))


async def _collect(engine: Any, job: Job, started: asyncio.Event | None = None) -> tuple[str, list[Piece]]:
    pieces: list[Piece] = []
    async for piece in engine.stream(job):
        pieces.append(piece)
        if started is not None:
            started.set()
    return "".join(p.text for p in pieces), pieces


@pytest.fixture(scope="module")
def engine(serve_model: Path) -> Any:
    from patchkit.serve.engine import LocalEngine
    from patchkit.serve.metrics import Metrics

    eng = LocalEngine.load(serve_model, max_batch=8, prefix_cache_size=2, metrics=Metrics(), device="cpu")
    eng.start()
    yield eng
    asyncio.run(eng.aclose())


@pytest.mark.slow
def test_mixed_batch_equals_solo_generate(engine: Any, serve_kit: Kit, serve_model: Path,
                                          serve_patches: Callable[[str], Path]) -> None:
    """8 requests, 3 patch sets, different prompt and prefix lengths; 4 join while 4 are decoding."""
    sets = _sets(serve_kit, serve_model, serve_patches)
    n = 24
    jobs = []
    for i, prompt in enumerate(PROMPTS):
        ps = PatchSet(f"m{i % 3}", tuple(sets[i % 3]))
        jobs.append(Job(tuple(engine.encode(prompt, chat=True)), ps, max_tokens=n))

    async def run() -> list[str]:
        first = [asyncio.Event() for _ in range(4)]
        early = [asyncio.create_task(_collect(engine, j, e)) for j, e in zip(jobs[:4], first, strict=True)]
        await asyncio.gather(*(e.wait() for e in first))  # every early row is decoding: the next four must join
        late = [asyncio.create_task(_collect(engine, j)) for j in jobs[4:]]
        return [text for text, _ in await asyncio.gather(*early, *late)]

    texts = asyncio.run(run())
    for i, (prompt, text) in enumerate(zip(PROMPTS, texts, strict=True)):
        assert text == _solo(serve_model, serve_kit, sets[i % 3], prompt, n), (i, prompt)
    assert len({t for t in texts}) > 3  # the patches and prompts really change the output
    rows = engine.metrics.batch_rows.collect()[0].samples
    bigger = sum(s.value for s in rows if s.name.endswith("_bucket") and s.labels["le"] == "1.0")
    total = next(s.value for s in rows if s.name.endswith("_count"))
    assert total - bigger > 0, "no decoding step ever had more than one row"


@pytest.mark.slow
def test_prefix_lru_evicts_and_recomputes(engine: Any, serve_kit: Kit, serve_model: Path,
                                          serve_patches: Callable[[str], Path]) -> None:
    sets = [resolve_patches(serve_model, [serve_patches(n)], VerificationPolicy.build(serve_kit.trust)) for n in ("acme/a", "acme/b", "acme/c")]
    ids = tuple(engine.encode("hello", chat=True))

    async def one(loaded: list[LoadedPatch]) -> str:
        text, _ = await _collect(engine, Job(ids, PatchSet("x", tuple(loaded)), max_tokens=6))
        return text

    first = [asyncio.run(one(s)) for s in sets]  # three sets through a 2-entry LRU: "a" is evicted
    assert len(engine._prefixes) == 2 and (sets[0][0].digest,) not in engine._prefixes
    again = asyncio.run(one(sets[0]))  # recomputed on next use, same output
    assert again == first[0]


@pytest.mark.slow
def test_cancel_frees_the_slot_and_stop_strings(engine: Any, serve_kit: Kit, serve_model: Path) -> None:
    ids = tuple(engine.encode("hello", chat=True))
    plain = PatchSet("plain", ())

    async def cancel_early() -> int:
        got = 0
        stream = engine.stream(Job(ids, plain, max_tokens=1500, ignore_eos=True))
        async for piece in stream:
            got = piece.completion_tokens
            if got >= 3:
                break
        await stream.aclose()
        for _ in range(200):
            if engine.running == 0:
                break
            await asyncio.sleep(0.01)
        return got

    got = asyncio.run(cancel_early())
    assert got >= 3 and engine.running == 0 and engine.waiting == 0

    async def whole(job: Job) -> tuple[str, list[Piece]]:
        return await _collect(engine, job)

    full, _ = asyncio.run(whole(Job(ids, plain, max_tokens=20, ignore_eos=True)))
    assert len(full) > 4
    stop = full[2:4]
    cut, pieces = asyncio.run(whole(Job(ids, plain, max_tokens=20, ignore_eos=True, stop=(stop,))))
    assert cut == full[: full.index(stop)] and pieces[-1].finish_reason == "stop"
    capped, pieces = asyncio.run(whole(Job(ids, plain, max_tokens=5, ignore_eos=True)))
    assert pieces[-1].finish_reason == "length" and pieces[-1].completion_tokens == 5


@pytest.mark.slow
def test_a_gated_patch_set_routes_each_request_as_the_runtime_does(engine: Any, serve_kit: Kit, serve_model: Path,
                                                                  tmp_path: Path) -> None:
    """Two requests, one the gate sends to the patch and one it does not: each equals its solo, routed generate."""
    import random

    import torch

    from patchkit.artifact.build import build_artifact
    from patchkit.artifact.sign import sign_artifact
    from patchkit.runtime.gate import prompt_states
    from tests.runtime._support import gated_source

    rng = random.Random(4)
    weight = [rng.gauss(0.0, 1.0) for _ in range(int(engine.base.config.hidden_size))]
    prompts = PROMPTS[:2]
    logits = []
    for p in prompts:
        ids = torch.tensor([engine.encode(p, chat=True)])
        h = prompt_states(engine.base, ids, torch.ones_like(ids), [1])[1]
        logits.append(float(h[0] @ torch.tensor(weight)))
    threshold = sum(logits) / 2
    src = gated_source(tmp_path / "src", weight=weight, bias=0.0, threshold=threshold, tokens=5)
    art = tmp_path / "art"
    build_artifact(src, art, name="acme/gated", version="1.0.0", domain="harmfulness", base_model=serve_model)
    sign_artifact(art, serve_kit.keys / "private.pem")
    loaded = resolve_patches(serve_model, [art], VerificationPolicy.build(serve_kit.trust))
    assert loaded[0].gate is not None
    n = 12

    async def run() -> list[str]:
        jobs = [Job(tuple(engine.encode(p, chat=True)), PatchSet("g", tuple(loaded)), max_tokens=n) for p in prompts]
        return [text for text, _ in await asyncio.gather(*(_collect(engine, j) for j in jobs))]

    texts = asyncio.run(run())
    for prompt, text in zip(prompts, texts, strict=True):
        assert text == _solo(serve_model, serve_kit, loaded, prompt, n)
    bare = [_solo(serve_model, serve_kit, [], p, n) for p in prompts]
    routed = [v > threshold for v in logits]
    assert routed.count(True) == 1
    for r, text, plain in zip(routed, texts, bare, strict=True):
        if not r:
            assert text == plain  # the prompt the gate keeps from the patch runs on the bare model
