"""`export --format peft` writes a base_model_name_or_path that AutoPeftModelForCausalLM can load,
and says on stderr what it wrote (issue 22, item 15: it wrote the directory's base name, so PEFT
went to the Hub)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import ZERO_DIGEST, pk, write_fake_model, write_prefix


def _signed(tmp: Path, *base: object) -> Path:
    keys = tmp / "keys"
    if not keys.exists():
        assert pk("keys", "generate", "--out", keys).returncode == 0
        assert pk("trust", "add", keys / "public.pem", "--scope", "acme/*").returncode == 0
    n = len(list(tmp.glob("art-*")))
    src = write_prefix(tmp / f"p{n}.safetensors", tokens=4, hidden=64, seed=n)
    out = tmp / f"art-{n}"
    r = pk("build", src, "--name", "acme/tox", "--version", f"1.0.{n}", "--domain", "toxicity", *base, "--out", out, cwd=tmp)
    assert r.returncode == 0, r.stderr
    assert pk("sign", out, "--key", keys / "private.pem").returncode == 0
    return out


@pytest.mark.slow
@pytest.mark.torch
def test_export_names_the_local_base_and_peft_loads_it(tiny_model_factory: Callable[[str], Path], tmp_path: Path) -> None:
    llama3 = tmp_path / "llama3"
    shutil.copytree(tiny_model_factory("llama"), llama3)
    art = _signed(tmp_path, "--base-model", "./llama3")

    r = pk("export", art, "--out", tmp_path / "plain", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((tmp_path / "plain" / "adapter_config.json").read_text())
    name = cfg["base_model_name_or_path"]
    assert "/" not in name  # the manifest's name for a local directory: not a Hub id …
    assert f"base_model_name_or_path = {name} (the manifest's base model name, which is not a Hub id" in r.stderr
    assert "--base-model DIR" in r.stderr  # … and the user is told so, with the flag that fixes it

    r = pk("export", art, "--out", tmp_path / "local", "--base-model", "./llama3", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["base_model_name_or_path"] == str(llama3.resolve())
    assert f"base_model_name_or_path = {llama3.resolve()} (the model directory given with --base-model)" in r.stderr
    cfg = json.loads((tmp_path / "local" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(llama3.resolve())

    from peft import AutoPeftModelForCausalLM  # HF_HUB_OFFLINE=1: loads only if the path is local

    model = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "local")
    assert model.peft_config["default"].num_virtual_tokens == 4


def test_export_checks_the_base_and_names_a_hub_id(tmp_path: Path) -> None:
    model = write_fake_model(tmp_path / "model")
    other = write_fake_model(tmp_path / "other", seed=1)
    art = _signed(tmp_path, "--base-model", model)
    r = pk("export", art, "--out", tmp_path / "x", "--base-model", other)
    assert r.returncode == 5 and "was built for base" in r.stderr  # the adapter must not name other weights
    assert not (tmp_path / "x").exists()

    hub = _signed(tmp_path, "--base-model-id", "HuggingFaceTB/SmolLM2-135M-Instruct", "--base-digest", ZERO_DIGEST)
    r = pk("export", hub, "--out", tmp_path / "h")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "h" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "HuggingFaceTB/SmolLM2-135M-Instruct (the Hub id in the manifest" in r.stderr
