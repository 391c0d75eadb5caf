"""Running a patch's signed self-test: the refusal-opening score, the reference at build, the check here.

The score is one batched forward pass over the chat-formatted prompts (the prefix's keys and
values reused), then one short teacher-forced continuation for the openings longer than one
token, from the prompts' own cache. No sampling, no generation loop: the same weights, device
and dtype give the same numbers, and a 135M model scores 30 prompts in a few seconds on 2 cores.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from patchkit import constants
from patchkit.artifact.gate import GateTensor
from patchkit.artifact.layout import PrefixTensor
from patchkit.artifact.selftest import (
    REFUSAL_OPENINGS,
    SelfTest,
    SelfTestItem,
    SelfTestReport,
    calibrate,
    judge,
)
from patchkit.errors import BehaviourError, InvalidInputError
from patchkit.lm.chat import format_chat, token_ids
from patchkit.lm.loading import load_model
from patchkit.lm.prefix import cache_kwarg, cache_layers, output_cache, pad_rows
from patchkit.manifest import GateInfo
from patchkit.runtime.compose import prefix_tensor
from patchkit.runtime.patched import PatchedModel
from patchkit.runtime.resolve import LoadedPatch

BATCH_SIZE = 8


def opening_ids(tokenizer: Any, openings: Sequence[str] = REFUSAL_OPENINGS) -> list[list[int]]:
    """The openings as token sequences, none a prefix of another (so their probabilities add up).

    An opening whose tokens extend a shorter one's is dropped: its event is inside the shorter
    one's, and counting both would count it twice.
    """
    seqs = {tuple(int(i) for i in tokenizer(o, add_special_tokens=False)["input_ids"]) for o in openings}
    kept: list[tuple[int, ...]] = []
    for s in sorted((s for s in seqs if s), key=lambda s: (len(s), s)):
        if not any(s[: len(k)] == k for k in kept):
            kept.append(s)
    return [list(s) for s in kept]


def _repeat_cache(cache: Any, times: int, config: Any) -> Any:
    from transformers import DynamicCache

    data = [(k.repeat_interleave(times, dim=0), v.repeat_interleave(times, dim=0)) for k, v in cache_layers(cache)]
    return DynamicCache(data, config=config)


def _log_odds(logp: float) -> float:
    """log p - log(1 - p), finite even where p rounds to 0 or 1."""
    logp = min(logp, math.log1p(-1e-12))
    return logp - math.log(-math.expm1(logp))


def _paths(seqs: list[list[int]]) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """The continuation rows the openings need, shared: each opening longer than one token is read
    off the one row that starts with all its tokens but the last. Returns (rows, [(row, opening)])."""
    proper = sorted({tuple(s[:-1]) for s in seqs if len(s) > 1})
    rows = [p for p in proper if not any(q != p and q[: len(p)] == p for q in proper)]
    uses = [(next(r for r, row in enumerate(rows) if row[: len(s) - 1] == tuple(s[:-1])), k)
            for k, s in enumerate(seqs) if len(s) > 1]
    return [list(r) for r in rows], uses


def _common_head(rows: list[list[int]]) -> int:
    """How many leading tokens every row shares (the chat template's head, a default system prompt),
    keeping at least one token of each row for the batched pass."""
    n = min(len(r) for r in rows) - 1
    first = rows[0]
    k = 0
    while k < n and all(r[k] == first[k] for r in rows):
        k += 1
    return k


@torch.no_grad()
def refusal_scores(model: PatchedModel, tokenizer: Any, prompts: Sequence[str], *, batch_size: int = BATCH_SIZE,
                   openings: Sequence[str] = REFUSAL_OPENINGS) -> list[float]:
    """The refusal log-odds of each prompt's reply: log p(reply opens with a refusal) minus log p(it does not).

    Three passes per batch, all reading the prefix's cached keys and values: the tokens every
    prompt shares (once), the rest of each prompt (left-padded after the shared head), then the
    opening rows from that cache. The result equals scoring each opening as one whole sequence.
    """
    seqs = opening_ids(tokenizer, openings)
    if not seqs:
        raise InvalidInputError("the tokenizer turns every refusal opening into nothing", "this tokenizer cannot run a self-test")
    pad = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
    device = model.device
    rows, uses = _paths(seqs)
    width = max((len(r) for r in rows), default=0)
    cont = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long, device=device)
    cont_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long, device=device)
    kw = cache_kwarg(model.base)
    scores: list[float] = []
    for start in range(0, len(prompts), batch_size):
        encoded = [token_ids(tokenizer, format_chat(tokenizer, p)) for p in prompts[start : start + batch_size]]
        b, head = len(encoded), _common_head(encoded)
        ids, mask = pad_rows([e[head:] for e in encoded], pad, left=True)
        ids, mask = ids.to(device), mask.to(device)
        if head:
            shared = model(input_ids=torch.tensor([encoded[0][:head]], device=device),
                           attention_mask=torch.ones(1, head, dtype=torch.long, device=device), use_cache=True)
            mask = torch.cat([torch.ones(b, head, dtype=torch.long, device=device), mask], 1)
            out = model(input_ids=ids, attention_mask=mask,
                        **{kw: _repeat_cache(output_cache(shared), b, model.base.config)})
        else:
            out = model(input_ids=ids, attention_mask=mask, use_cache=True)
        first = out.logits[:, -1, :].float().log_softmax(-1)  # [B, V]
        logp = torch.stack([first[:, s[0]] for s in seqs], dim=1)  # [B, K]
        if rows:
            r = len(rows)
            more = model(input_ids=cont.repeat(b, 1), attention_mask=torch.cat([mask.repeat_interleave(r, 0), cont_mask.repeat(b, 1)], 1),
                         **{kw: _repeat_cache(output_cache(out), r, model.base.config)})
            lp = more.logits.float().log_softmax(-1).view(b, r, width, -1)
            for row, k in uses:
                t = torch.tensor(seqs[k][1:], dtype=torch.long, device=device)
                steps = lp[:, row, : len(t), :].gather(-1, t.view(1, -1, 1).expand(b, -1, 1)).squeeze(-1)  # [B, len]
                logp[:, k] = logp[:, k] + steps.sum(-1)
        scores += [_log_odds(float(x)) for x in torch.logsumexp(logp.double(), dim=1)]
    return scores


def environment(model: PatchedModel) -> dict[str, str]:
    """Where a score was measured: what the report compares when a self-test fails."""
    import transformers

    return {"device": str(model.device), "dtype": str(model.dtype).removeprefix("torch."), "torch": torch.__version__,
            "transformers": transformers.__version__, "patchkit": constants.PATCHKIT_VERSION,
            "python": platform.python_version(), "platform": f"{platform.system()}-{platform.machine()}"}


def reference_builder(base_model: Path, items: list[SelfTestItem], *, tolerance: float, device: Any = None,
                      dtype: Any = None) -> Callable[[PrefixTensor, tuple[GateTensor, GateInfo] | None], SelfTest]:
    """For `build --self-test`: score the prompts with the patch on the base weights, set the threshold.

    The build is refused when the patch itself gives more verdicts than the tolerance allows
    other than the vendor's: a self-test that fails on the vendor's own machine checks nothing.
    """

    def compute(prefix: PrefixTensor, gate: tuple[GateTensor, GateInfo] | None = None) -> SelfTest:
        """`gate`: a gated patch's probe, so the signed scores are those of the patch as the runtime applies it."""
        from patchkit.runtime.gate import Gate

        base, tok = load_model(base_model, device=device, dtype=dtype, what="base model")
        embed = base.get_input_embeddings().weight
        model = PatchedModel(base, prefix_tensor(prefix).to(device=embed.device, dtype=embed.dtype),
                             gates=None if gate is None else [Gate.from_parts(*gate)])
        model.eval()
        started = time.perf_counter()
        scores = refusal_scores(model, tok, [it.prompt for it in items])
        env = environment(model)
        test = SelfTest(items, scores, calibrate(scores, [it.expect for it in items]), tolerance, env)
        report = judge(test, scores, patch="the patch", digest="", environment=env, seconds=time.perf_counter() - started)
        if not report.passed:
            wrong = [r for r in report.items if not r.agrees]
            shown = "; ".join(f"{r.prompt[:60]!r} expected {r.expect}, scored {r.score:.2f}" for r in wrong[:3])
            raise BehaviourError(
                f"the patch gives {report.disagreements} of {report.n} self-test verdicts other than the file says "
                f"(at most {report.max_disagreements} may differ): {shown}",
                "fix the expected verdicts, raise --self-test-tolerance, or train the patch further",
            )
        return test

    return compute


def run_selftest(model: PatchedModel, tokenizer: Any, test: SelfTest, *, patch: str = "", digest: str = "") -> SelfTestReport:
    """Score the signed prompts on `model` as loaded here and judge them against the signed verdicts."""
    started = time.perf_counter()
    scores = refusal_scores(model, tokenizer, [it.prompt for it in test.items])
    return judge(test, scores, patch=patch, digest=digest, environment=environment(model),
                 seconds=time.perf_counter() - started)


def signed_selftest(patch: LoadedPatch) -> SelfTest | None:
    """The verified patch's self-test (None when it ships none); re-checked against its manifest."""
    from patchkit.artifact.selftest import check_selftest_file
    from patchkit.trust.bundles import read_artifact_files

    info = patch.manifest.self_test
    if info is None:
        return None
    files = read_artifact_files(patch.path)
    return check_selftest_file(files, info.model_dump(mode="json"), str(patch.path))


def check_behaviour(model_dir: Path, patches: Sequence[LoadedPatch], *, device: Any = None, dtype: Any = None,
                    require: bool = True) -> list[SelfTestReport]:
    """Each patch's self-test on `model_dir` with that patch alone, on this device and dtype.

    A patch's self-test was signed for that patch on its own; a composition is a different
    prefix, so each is checked alone. One model load serves every patch. `require`: a patch
    without a self-test is an error (the user asked for a behavioural check).
    """
    from patchkit.errors import NotFoundError

    tests = [(p, signed_selftest(p)) for p in patches]
    missing = [p.ref for p, t in tests if t is None]
    if missing and require:
        raise NotFoundError(f"{', '.join(missing)} ships no self-test", "ask the publisher for a build with `--self-test`")
    base, tok = load_model(model_dir, device=device, dtype=dtype)
    embed = base.get_input_embeddings().weight
    reports: list[SelfTestReport] = []
    for p, t in tests:
        if t is None:
            continue
        model = PatchedModel(base, prefix_tensor(p.prefix).to(device=embed.device, dtype=embed.dtype), [p])
        model.eval()
        reports.append(run_selftest(model, tok, t, patch=p.ref, digest=p.digest))
    return reports


__all__ = ["check_behaviour", "environment", "opening_ids", "reference_builder", "refusal_scores", "run_selftest",
           "signed_selftest"]
