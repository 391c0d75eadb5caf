"""`patchkit build` refuses bad sources with exit 6 and writes nothing."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest

from patchkit._internal.tensors import serialize
from tests.helpers import ZERO_DIGEST, f32_bytes, pk, write_prefix

BASE = ["--base-model-id", "tiny", "--base-digest", ZERO_DIGEST]


def _build(src: Path, out: Path, *extra: str) -> tuple[int, str]:
    r = pk("build", src, "--name", "acme/tox", "--version", "1.0.0", "--domain", "toxicity", *BASE, "--out", out, *extra)
    return r.returncode, r.stderr


def _header_file(path: Path, header: dict[str, object], data: bytes) -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _cases(tmp: Path) -> dict[str, tuple[Path, str]]:
    good = write_prefix(tmp / "good.safetensors")
    raw = good.read_bytes()
    c: dict[str, tuple[Path, str]] = {}
    c["lying-offsets"] = (_header_file(tmp / "lie.safetensors", {"prompt_embeddings": {"dtype": "F32", "shape": [4, 64], "data_offsets": [0, 4096]}}, b"\0" * 64), "points past the end")
    big = struct.pack("<Q", 200 * 1024 * 1024) + b"{}"
    (tmp / "big.safetensors").write_bytes(big)
    c["header-over-100mb"] = (tmp / "big.safetensors", "over the")
    (tmp / "trunc.safetensors").write_bytes(raw[: len(raw) // 2])
    c["truncated"] = (tmp / "trunc.safetensors", "")
    nan = f32_bytes([0.0] * 255 + [math.nan])
    (tmp / "nan.safetensors").write_bytes(serialize({"p": ("F32", (4, 64), nan)}))
    c["nan"] = (tmp / "nan.safetensors", "NaN or Inf")
    inf = f32_bytes([0.0] * 255 + [math.inf])
    (tmp / "inf.safetensors").write_bytes(serialize({"p": ("F32", (4, 64), inf)}))
    c["inf"] = (tmp / "inf.safetensors", "NaN or Inf")
    (tmp / "1d.safetensors").write_bytes(serialize({"p": ("F32", (256,), f32_bytes([0.1] * 256))}))
    c["1d"] = (tmp / "1d.safetensors", "expected 2-D")
    (tmp / "3d.safetensors").write_bytes(serialize({"p": ("F32", (2, 2, 64), f32_bytes([0.1] * 256))}))
    c["3d"] = (tmp / "3d.safetensors", "expected 2-D")
    two = {"a": ("F32", (4, 64), f32_bytes([0.1] * 256)), "b": ("F32", (4, 64), f32_bytes([0.2] * 256))}
    (tmp / "two.safetensors").write_bytes(serialize(two))
    c["two-tensors"] = (tmp / "two.safetensors", "holds 2 tensors")
    (tmp / "int.safetensors").write_bytes(serialize({"p": ("I32", (4, 64), struct.pack("<256i", *range(256)))}))
    c["integer-dtype"] = (tmp / "int.safetensors", "not floating point")
    (tmp / "model.bin").write_bytes(b"\x80\x04\x95" + b"\0" * 64)
    c["pickle-bin"] = (tmp / "model.bin", "pickle")
    (tmp / "pickled.safetensors").write_bytes(b"PK\x03\x04" + b"\0" * 64)
    c["pickle-disguised"] = (tmp / "pickled.safetensors", "pickle")
    dup = b'{"p": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]}, "p": {"dtype": "F32", "shape": [1, 1], "data_offsets": [0, 4]}}'
    (tmp / "dup.safetensors").write_bytes(struct.pack("<Q", len(dup)) + dup + b"\0" * 4)
    c["duplicate-keys"] = (tmp / "dup.safetensors", "duplicate JSON key")
    return c


CASES = ["lying-offsets", "header-over-100mb", "truncated", "nan", "inf", "1d", "3d", "two-tensors", "integer-dtype",
         "pickle-bin", "pickle-disguised", "duplicate-keys"]


@pytest.mark.parametrize("case", CASES)
def test_bad_source_exits_6(case: str, tmp_path: Path) -> None:
    src, needle = _cases(tmp_path)[case]
    out = tmp_path / "out"
    code, stderr = _build(src, out)
    assert code == 6, (case, stderr)
    assert needle in stderr, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists(), "a refused build writes nothing"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")], "no staging dir left behind"


@pytest.mark.parametrize("name", ["acme/../x", "Acme/x", "acme/x y", "acme/x/y", "acme"])
def test_bad_names_exit_6(name: str, tmp_path: Path) -> None:
    src = write_prefix(tmp_path / "p.safetensors")
    r = pk("build", src, "--name", name, "--version", "1.0.0", "--domain", "toxicity", *BASE, "--out", tmp_path / "o")
    assert r.returncode == 6 and "invalid patch name" in r.stderr


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "one"])
def test_bad_versions_exit_6(version: str, tmp_path: Path) -> None:
    src = write_prefix(tmp_path / "p.safetensors")
    r = pk("build", src, "--name", "acme/x", "--version", version, "--domain", "toxicity", *BASE, "--out", tmp_path / "o")
    assert r.returncode == 6 and "SemVer" in r.stderr


def test_unknown_major_schema_is_refused_at_verify(tmp_path: Path) -> None:
    from tests.helpers import make_signed_patch

    art, keys = make_signed_patch(tmp_path)
    m = json.loads((art / "patchkit.json").read_text())
    m["schema_version"] = "2.0"
    (art / "patchkit.json").write_text(json.dumps(m))
    # re-sign so only the schema gate can refuse it
    from patchkit.trust.bundles import sign_directory
    from patchkit.trust.keys import load_private_key

    sign_directory(art, load_private_key(keys / "private.pem"))
    r = pk("verify", art)
    assert r.returncode == 6 and "unsupported manifest schema_version 2.0" in r.stderr


def test_existing_output_is_not_overwritten(tmp_path: Path) -> None:
    src = write_prefix(tmp_path / "p.safetensors")
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, stderr = _build(src, out)
    assert code == 2 and (out / "keep.txt").read_text() == "mine"


def test_peft_adapter_dir_is_imported(tmp_path: Path) -> None:
    d = tmp_path / "adapter"
    d.mkdir()
    write_prefix(d / "adapter_model.safetensors")
    (d / "adapter_config.json").write_text(json.dumps({
        "peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 4, "token_dim": 64,
        "num_transformer_submodules": 1, "prompt_tuning_init": "TEXT", "prompt_tuning_init_text": "Be safe."}))
    code, stderr = _build(d, tmp_path / "o")
    assert code == 0, stderr
    m = json.loads((tmp_path / "o" / "patchkit.json").read_text())
    assert m["prefix"]["init"] == 'text:"Be safe."' and m["training"]["method"] == "imported"


def test_lora_adapter_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "adapter"
    d.mkdir()
    write_prefix(d / "adapter_model.safetensors")
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    code, stderr = _build(d, tmp_path / "o")
    assert code == 6 and "only PROMPT_TUNING" in stderr


def test_metrics_and_training_are_embedded(tmp_path: Path) -> None:
    src = write_prefix(tmp_path / "p.safetensors")
    (tmp_path / "metrics.json").write_text(json.dumps({"metrics": [
        {"name": "refusal_rate", "value": 0.8, "higher_is_better": True, "dataset": "harmbench:test", "n": 60,
         "scorer": "markers", "baseline": 0.02, "reference": 0.9, "fixed_prompt": 0.1}]}))
    (tmp_path / "training.json").write_text(json.dumps({"method": "sft+dpo", "reference": "synthetic", "seed": 3,
                                                         "data": [{"name": "x", "count": 2, "sha256": "ab" * 32}]}))
    code, stderr = _build(src, tmp_path / "o", "--metrics", str(tmp_path / "metrics.json"), "--training", str(tmp_path / "training.json"))
    assert code == 0, stderr
    m = json.loads((tmp_path / "o" / "patchkit.json").read_text())
    assert m["metrics"][0]["value"] == 0.8 and m["metrics"][0]["baseline"] == 0.02
    assert m["training"]["method"] == "sft+dpo" and m["training"]["seed"] == 3
    assert "refusal_rate" in (tmp_path / "o" / "README.md").read_text()


def test_build_from_spec_file(tmp_path: Path) -> None:
    src = write_prefix(tmp_path / "p.safetensors")
    spec = json.loads((Path(__file__).resolve().parents[2] / "manifests" / "example-build-spec.json").read_text())
    spec.update({"source": str(src), "base_model": None, "metrics": None, "out": str(tmp_path / "o"),
                 "base_model_id": "tiny", "base_digest": ZERO_DIGEST})
    spec = {k: v for k, v in spec.items() if v is not None}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    r = pk("build", "--spec", tmp_path / "spec.json", "--version", "1.0.1")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "o" / "patchkit.json").read_text())
    assert m["name"] == "acme/smollm2-harm" and m["version"] == "1.0.1" and m["domain"] == "harmfulness"
    (tmp_path / "bad.json").write_text(json.dumps({"nme": "x"}))
    r = pk("build", "--spec", tmp_path / "bad.json")
    assert r.returncode == 6 and "unknown key" in r.stderr
