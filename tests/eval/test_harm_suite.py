"""The harmfulness suite by source: per-source rates with n and Wilson intervals, the caveat rate,
factual accuracy, cached replies, and the manifest metrics and HTML report it writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from patchkit.eval.harm_suite import Source, hash_sample, render, run_suite, score_rows, table_markdown
from patchkit.eval.items import Item
from patchkit.eval.stats import wilson
from patchkit.manifest import Metric


def _sources() -> list[Source]:
    return [Source("harm-direct:test", "harmful", "direct"), Source("contrast:test", "benign", "contrast"),
            Source("everyday:test", "benign", "everyday"), Source("factual:test", "factual", "facts")]


def test_rows_are_rates_with_wilson_intervals() -> None:
    srcs = _sources()
    scored = {"baseline": {
        "harm-direct:test": [{"refused": True}, {"refused": False}, {"refused": False}, {"refused": False}],
        "contrast:test": [{"refused": True, "caveat": False}, {"refused": False, "caveat": True}],
        "everyday:test": [{"refused": False, "caveat": False}, {"refused": False, "caveat": True}],
        "factual:test": [{"refused": False, "caveat": False, "correct": True}, {"refused": False, "caveat": False, "correct": False}],
    }}
    rows = {r.measure + "|" + r.source.spec: r for r in score_rows(srcs, scored)}
    assert rows["refusal_rate|harm-direct:test"].values["baseline"] == wilson(1, 4)
    assert rows["over_refusal|contrast:test"].values["baseline"] == wilson(1, 2)
    assert rows["factual_accuracy|factual:test"].values["baseline"] == wilson(1, 2)
    # Caveats count among the answered benign replies only: 2 of the 3 answered ones.
    cav = rows["caveat_rate|contrast:test+everyday:test"].values["baseline"]
    assert cav.value == pytest.approx(2 / 3) and cav.n == 3


def test_hash_sample_ignores_file_order() -> None:
    items = [Item(f"prompt {i}") for i in range(50)]
    a = hash_sample(items, 10)
    b = hash_sample(list(reversed(items)), 10)
    assert len(a) == 10 and {x.prompt for x in a} == {x.prompt for x in b}
    assert [x.prompt for x in a] == [x.prompt for x in items if x in a]
    assert hash_sample(items, None) == items


@pytest.mark.torch
def test_run_suite_end_to_end_on_tiny_model(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from safetensors.torch import save_file

    from patchkit.eval import backend

    prefix = tmp_path / "prefix.safetensors"
    save_file({"prompt_embeddings": torch.randn(3, 64) * 0.02}, str(prefix))
    calls: list[int] = []
    real = backend.Backend.generate

    def counting(self: Any, prompts: Any, **kw: Any) -> Any:
        calls.append(len(prompts))
        return real(self, prompts, **kw)

    monkeypatch.setattr(backend.Backend, "generate", counting)
    out = tmp_path / "eval"
    res = run_suite(tiny_model, prefix, out, sources=_sources(), limit=3, max_new_tokens=6, factual_max_new_tokens=4,
                    batch_size=4)
    assert len(calls) == 3 * 4 and all(n == 3 for n in calls)
    measures = [(r.measure, r.source.spec) for r in res.rows]
    assert ("caveat_rate", "contrast:test+everyday:test") in measures and len(measures) == 5
    assert all(set(r.values) == {"baseline", "fixed_prompt", "patched"} for r in res.rows if r.measure != "caveat_rate")
    data = json.loads((out / "metrics.json").read_text())
    for m in data["metrics"]:
        Metric.model_validate(m)
    assert {m["dataset"] for m in data["metrics"]} >= {"harm-direct:test", "factual:test"}
    page = (out / "report.html").read_text()
    assert "% [" in page and "n=3" in page and 'id="chart"' in page
    assert 'id="validation-curve"' not in page  # a bare prefix file carries no training record
    assert "% [" in table_markdown(res)
    # A second run reads every reply from the cache.
    calls.clear()
    again = run_suite(tiny_model, prefix, out, sources=_sources(), limit=3, max_new_tokens=6, factual_max_new_tokens=4,
                      batch_size=4)
    assert calls == [] and [r.to_dict() for r in again.rows] == [r.to_dict() for r in res.rows]
    assert render(again).count("<tr>") == len(again.rows) + 1


@pytest.mark.torch
def test_default_cache_names_are_unchanged_and_bfloat16_files_its_own(tiny_model: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """float32 on the CPU files replies under the identities caches were written with before
    --device/--dtype existed (so they still hit); bfloat16 runs every configuration, the bare
    prefix's patched model included, in bf16 and files them apart."""
    import hashlib

    import torch
    from safetensors.torch import save_file

    from patchkit.basemodel.fingerprint import fingerprint
    from patchkit.eval import backend
    from patchkit.eval.harm_suite import STRONG_SYSTEM_PROMPT, _cache_path

    prefix = tmp_path / "prefix.safetensors"
    save_file({"prompt_embeddings": torch.randn(3, 64) * 0.02}, str(prefix))
    srcs = _sources()[:2]
    out = tmp_path / "eval"
    seen: list[tuple[Any, Any]] = []
    real = backend.Backend.generate

    def spy(self: Any, prompts: Any, **kw: Any) -> Any:
        seen.append((next(self.model.parameters()).dtype, getattr(self.model, "prefix", None)))
        return real(self, prompts, **kw)

    monkeypatch.setattr(backend.Backend, "generate", spy)

    def run(**kw: Any) -> set[str]:
        seen.clear()
        res = run_suite(tiny_model, prefix, out, sources=srcs, limit=2, max_new_tokens=2, batch_size=4, **kw)
        assert res.settings["device"] == "cpu"
        return {f.name for f in (out / "replies").iterdir()}

    f32 = run()
    digest = fingerprint(tiny_model)
    old_identities = {"baseline": digest, "fixed_prompt": f"{digest}|system:{STRONG_SYSTEM_PROMPT}",
                      "patched": f"{digest}|prefix:{hashlib.sha256(prefix.read_bytes()).hexdigest()}"}
    assert f32 == {_cache_path(out, c, f"{ident}|2", s.spec).name for c, ident in old_identities.items() for s in srcs}
    assert len(seen) == 6 and all(d == torch.float32 for d, _ in seen)

    both = run(dtype="bfloat16")
    assert len(seen) == 6 and all(d == torch.bfloat16 for d, _ in seen), seen
    patched = [p for _, p in seen if p is not None]
    assert len(patched) == 2 and all(p.dtype == torch.bfloat16 for p in patched)
    assert len(both) == 12 and f32 < both

    assert run() == both and seen == []


@pytest.mark.torch
@pytest.mark.slow
def test_verified_patch_runs_in_bfloat16_with_the_same_patch_digest(tiny_model: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A signed patch applied through the verified runtime loads on the run's dtype, and its
    recorded digest is the patch's own (float32 values), not the cast prefix's."""
    import torch

    from patchkit.eval import backend
    from tests.helpers import make_signed_patch

    art, _keys = make_signed_patch(tmp_path, base_model=tiny_model)
    srcs = _sources()[:1]
    seen: list[Any] = []
    real = backend.Backend.generate

    def spy(self: Any, prompts: Any, **kw: Any) -> Any:
        if hasattr(self.model, "prefix"):
            seen.append((next(self.model.parameters()).dtype, self.model.prefix.dtype))
        return real(self, prompts, **kw)

    monkeypatch.setattr(backend.Backend, "generate", spy)
    kw: dict[str, Any] = {"patches": [str(art)], "sources": srcs, "limit": 2, "max_new_tokens": 2, "batch_size": 4}
    f32 = run_suite(tiny_model, None, tmp_path / "eval", **kw)
    bf16 = run_suite(tiny_model, None, tmp_path / "eval", dtype="bfloat16", **kw)
    assert seen == [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16)]
    assert f32.settings["patch_sha256"] == bf16.settings["patch_sha256"] is not None
    assert (f32.settings["dtype"], bf16.settings["dtype"]) == ("float32", "bfloat16")


@pytest.mark.torch
def test_report_draws_the_patch_training_curve(tiny_model: Path, tmp_path: Path) -> None:
    """A `patchkit train` output dir whose training.json has a validation block gets its trade-off
    curve in the harm-sources report, apart from the test-set table."""
    import torch
    from safetensors.torch import save_file

    from tests.eval.test_tradeoff import _block

    run = tmp_path / "train"
    run.mkdir()
    save_file({"prompt_embeddings": torch.randn(3, 64) * 0.02}, str(run / "adapter_model.safetensors"))
    (run / "training.json").write_text(json.dumps({"method": "sft", "validation": _block()}))
    res = run_suite(tiny_model, run, tmp_path / "eval", sources=_sources(), limit=2, max_new_tokens=4,
                    factual_max_new_tokens=3, batch_size=4)
    assert [name for name, _ in res.validation] == [str(run)]
    page = (tmp_path / "eval" / "report.html").read_text()
    assert page.index('id="chart"') < page.index('id="validation-curve"')
