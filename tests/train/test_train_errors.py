"""Bad input to `patchkit train` is refused with a clear error naming the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from patchkit.errors import InvalidInputError, NotFoundError, UsageError
from tests.train.conftest import HARMFUL, REFUSAL

pytestmark = pytest.mark.torch


def _run(base: Path, prompts: Any, reference: Any, out: Path, **kw: Any) -> Any:
    from patchkit.train import train_patch

    opts: dict[str, Any] = {"tokens": 4, "max_new_tokens": 8, "max_steps": 1, **kw}
    return train_patch(base, reference, prompts, domain=opts.pop("domain", "harmfulness"), out=out, **opts)


def test_empty_prompts_file(tiny_model_factory: Any, tmp_path: Path, reference_file: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"empty\.jsonl: the prompts file is empty"):
        _run(tiny_model_factory("llama"), empty, reference_file, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_malformed_jsonl_line_names_file_and_line(tiny_model_factory: Any, tmp_path: Path, reference_file: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": "broken"\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"bad\.jsonl:2: malformed JSON line"):
        _run(tiny_model_factory("llama"), bad, reference_file, tmp_path / "out")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"prompt": "ok"}\n\n{"text": "no prompt key"}\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"wrong\.jsonl:3: missing 'prompt' field"):
        _run(tiny_model_factory("llama"), wrong, reference_file, tmp_path / "out")
    ref = tmp_path / "ref.jsonl"
    ref.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"ref\.jsonl:2: expected a JSON object"):
        _run(tiny_model_factory("llama"), HARMFUL, ref, tmp_path / "out")
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"prompt": "a", "prompt": "b"}\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"dup\.jsonl:1: .*duplicate"):
        _run(tiny_model_factory("llama"), dup, reference_file, tmp_path / "out")


def test_prompt_longer_than_context(tiny_model_factory: Any, tmp_path: Path) -> None:
    prompts = tmp_path / "long.jsonl"
    long_prompt = "bread and the sea " * 120  # far more than 256 - 4 - 8 tokens
    prompts.write_text(json.dumps({"prompt": "short one"}) + "\n" + json.dumps({"prompt": long_prompt}) + "\n", encoding="utf-8")
    rows = [{"prompt": "short one", "response": REFUSAL}, {"prompt": long_prompt, "response": REFUSAL}]
    with pytest.raises(InvalidInputError, match=r"long\.jsonl:2: the prompt is \d+ tokens, longer than the context allows \(256 - 4 prefix - 8 new tokens = 244\)"):
        _run(tiny_model_factory("llama"), prompts, rows, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_reference(tiny_model_factory: Any, tmp_path: Path, prompts_file: Path) -> None:
    with pytest.raises(NotFoundError, match=r"reference .*nope\.jsonl does not exist"):
        _run(tiny_model_factory("llama"), prompts_file, tmp_path / "nope.jsonl", tmp_path / "out")
    # A reference file that lacks a training prompt names the prompt's line.
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps({"prompt": HARMFUL[0], "response": REFUSAL}) + "\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"prompts\.jsonl:2: no reference response for this prompt in partial\.jsonl"):
        _run(tiny_model_factory("llama"), prompts_file, partial, tmp_path / "out")
    with pytest.raises(NotFoundError, match="base model"):
        _run(tmp_path / "no-model", prompts_file, partial, tmp_path / "out")
    with pytest.raises(NotFoundError, match="prompts file"):
        _run(tiny_model_factory("llama"), tmp_path / "missing.jsonl", partial, tmp_path / "out")


def test_zero_tokens_and_unknown_stage(tiny_model_factory: Any, tmp_path: Path, prompts_file: Path, reference_file: Path) -> None:
    base = tiny_model_factory("llama")
    with pytest.raises(InvalidInputError, match="--tokens must be at least 1"):
        _run(base, prompts_file, reference_file, tmp_path / "out", tokens=0)
    with pytest.raises(InvalidInputError, match="unknown stage 'ppo'"):
        _run(base, prompts_file, reference_file, tmp_path / "out", stages="sft,ppo")
    with pytest.raises(InvalidInputError, match="unknown --dpo-reference"):
        _run(base, prompts_file, reference_file, tmp_path / "out", dpo_reference="base")
    with pytest.raises(InvalidInputError, match="unknown --init"):
        _run(base, prompts_file, reference_file, tmp_path / "out", init="zeros")
    with pytest.raises(InvalidInputError, match="unknown domain"):
        _run(base, prompts_file, reference_file, tmp_path / "out", domain="safety")


def test_no_dpo_pairs_left_and_nonempty_out(tiny_model_factory: Any, tmp_path: Path, prompts_file: Path) -> None:
    base = tiny_model_factory("llama")
    # Chosen never refuses, so under the refusal scorer no pair reaches the margin.
    rows = [{"prompt": p, "response": "Sure, here is how."} for p in HARMFUL]
    with pytest.raises(InvalidInputError, match="no DPO pairs left"):
        _run(base, prompts_file, rows, tmp_path / "out")
    out = tmp_path / "used"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="already exists and is not empty"):
        _run(base, prompts_file, [{"prompt": p, "response": REFUSAL} for p in HARMFUL], out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
