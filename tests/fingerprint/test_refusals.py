"""Bad weights are refused with exit code 6 and a clear one-line message, never a crash or hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from patchkit.basemodel.fingerprint import fingerprint
from patchkit.cli import main
from patchkit.errors import InvalidInputError
from tests.fingerprint.helpers import INDEX, random_tensors, write_header, write_model

REPO = Path(__file__).resolve().parents[2]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["fingerprint", *args])
    out, err = capsys.readouterr()
    code = exc.value.code
    assert isinstance(code, int)
    return code, out, err


# Each builder makes a bad model directory and returns it with a phrase the message must contain.
def truncated(d: Path) -> tuple[Path, str]:
    write_model(d, random_tensors())
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    return d, "past the end"


def header_points_past_end(d: Path) -> tuple[Path, str]:
    d.mkdir()
    write_header(d / "model.safetensors", {"w": {"dtype": "F32", "shape": [16], "data_offsets": [64, 128]}}, b"\0" * 64)
    return d, "past the end"


def overlapping_ranges(d: Path) -> tuple[Path, str]:
    d.mkdir()
    header = {
        "a": {"dtype": "F32", "shape": [16], "data_offsets": [0, 64]},
        "b": {"dtype": "F32", "shape": [16], "data_offsets": [32, 96]},
    }
    write_header(d / "model.safetensors", header, b"\0" * 96)
    return d, "overlap"


def header_longer_than_file(d: Path) -> tuple[Path, str]:
    d.mkdir()
    write_header(d / "model.safetensors", {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, claimed_len=10_000)
    return d, "longer than the file"


def empty_file(d: Path) -> tuple[Path, str]:
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"")
    return d, "truncated"


def header_not_json(d: Path) -> tuple[Path, str]:
    d.mkdir()
    raw = b"{not json}"
    (d / "model.safetensors").write_bytes(len(raw).to_bytes(8, "little") + raw)
    return d, "not valid JSON"


def no_weights(d: Path) -> tuple[Path, str]:
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d, "no weights"


def empty_dir(d: Path) -> tuple[Path, str]:
    d.mkdir()
    return d, "no weights"


def pickle_only(d: Path) -> tuple[Path, str]:
    d.mkdir()
    (d / "pytorch_model.bin").write_bytes(b"PK\x03\x04" + os.urandom(64))
    (d / "config.json").write_text("{}")
    return d, "save_file"  # the conversion recipe


def pickle_named_safetensors(d: Path) -> tuple[Path, str]:
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"\x80\x04" + os.urandom(64))
    return d, "pickle"


def duplicate_across_shards(d: Path) -> tuple[Path, str]:
    t = random_tensors()
    write_model(d, t, names=["a.safetensors"])
    write_model(d, {"model.norm.weight": t["model.norm.weight"]}, names=["b.safetensors"])
    return d, "appears twice"


def no_tensors(d: Path) -> tuple[Path, str]:
    d.mkdir()
    write_header(d / "model.safetensors", {"__metadata__": {"format": "pt"}})
    return d, "no tensors"


def index_missing_shard(d: Path) -> tuple[Path, str]:
    write_model(d, random_tensors(), shards=3)
    (d / "model-00002-of-00003.safetensors").unlink()
    return d, "does not exist"


def index_escapes_dir(d: Path) -> tuple[Path, str]:
    write_model(d, random_tensors(), shards=2)
    idx = json.loads((d / INDEX).read_text())
    idx["weight_map"] = dict.fromkeys(idx["weight_map"], "../elsewhere.safetensors")
    (d / INDEX).write_text(json.dumps(idx))
    return d, "outside the model directory"


def index_disagrees(d: Path) -> tuple[Path, str]:
    write_model(d, random_tensors(), shards=2)
    idx = json.loads((d / INDEX).read_text())
    first = sorted(idx["weight_map"])[0]
    idx["weight_map"]["ghost.weight"] = idx["weight_map"][first]
    (d / INDEX).write_text(json.dumps(idx))
    return d, "ghost.weight"


def index_without_weight_map(d: Path) -> tuple[Path, str]:
    write_model(d, random_tensors(), shards=2)
    (d / INDEX).write_text(json.dumps({"metadata": {}}))
    return d, "weight_map"


def broken_symlink(d: Path) -> tuple[Path, str]:
    d.mkdir()
    (d / "model.safetensors").symlink_to("../blobs/missing")
    return d, "broken symlink"


def missing_dir(d: Path) -> tuple[Path, str]:
    return d / "nope", "does not exist"


BAD: list[Callable[[Path], tuple[Path, str]]] = [
    truncated,
    header_points_past_end,
    overlapping_ranges,
    header_longer_than_file,
    empty_file,
    header_not_json,
    no_weights,
    empty_dir,
    pickle_only,
    pickle_named_safetensors,
    duplicate_across_shards,
    no_tensors,
    index_missing_shard,
    index_escapes_dir,
    index_disagrees,
    index_without_weight_map,
    broken_symlink,
    missing_dir,
]


@pytest.mark.parametrize("make", BAD, ids=[f.__name__ for f in BAD])
def test_bad_model_exits_6_with_clear_message(tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], tuple[Path, str]]) -> None:
    model, phrase = make(tmp_path / "model")
    code, out, err = run_cli(capsys, str(model))
    assert code == 6, err
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("patchkit: error: ")
    assert phrase in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("make", [truncated, pickle_only, no_weights], ids=["truncated", "pickle", "none"])
def test_bad_model_json_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], tuple[Path, str]]) -> None:
    model, _ = make(tmp_path / "model")
    code, out, _ = run_cli(capsys, str(model), "--json")
    assert code == 6
    obj = json.loads(out)
    assert obj["ok"] is False and obj["exit_code"] == 6 and obj["error"] == "invalid-input"


def test_pickle_message_says_how_to_convert(tmp_path: Path) -> None:
    model, _ = pickle_only(tmp_path / "model")
    with pytest.raises(InvalidInputError) as exc:
        fingerprint(model)
    assert "pytorch_model.bin" in exc.value.message
    assert exc.value.hint is not None and "safetensors" in exc.value.hint


def test_refusal_leaves_files_and_cache_untouched(tmp_path: Path, pk_home: Path) -> None:
    model, _ = truncated(tmp_path / "model")
    before = {p.name: p.read_bytes() for p in model.iterdir()}
    with pytest.raises(InvalidInputError):
        fingerprint(model)
    assert {p.name: p.read_bytes() for p in model.iterdir()} == before
    assert list(pk_home.rglob("*.json")) == []


def test_cli_json_fields_and_human_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_model(tmp_path / "m", random_tensors(), shards=2)
    code, out, _ = run_cli(capsys, str(model), "--json")
    assert code == 0
    obj = json.loads(out)
    assert obj["digest"].startswith("pk-tensors-blake3-v1:") and len(obj["digest"]) == len("pk-tensors-blake3-v1:") + 64
    assert obj["tensors"] == 8 and obj["bytes"] == sum(len(b) for _, _, b in random_tensors().values())
    assert obj["algorithm"] == "blake3" and obj["cached"] is False and len(obj["files"]) == 2

    code, out, err = run_cli(capsys, str(model), "--algorithm", "sha256", "--no-cache")
    assert code == 0
    assert out.strip().startswith("pk-tensors-sha256-v1:") and len(out.strip().splitlines()) == 1
    assert "8 tensors" in err


def test_cli_unknown_algorithm_is_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_model(tmp_path / "m", random_tensors())
    code, _, _ = run_cli(capsys, str(model), "--algorithm", "md5")
    assert code == 2


def test_subprocess_end_to_end_without_torch(tmp_path: Path) -> None:
    """`python -m patchkit fingerprint` works and the fingerprint path never imports torch or numpy."""
    model = write_model(tmp_path / "m", random_tensors(), shards=3)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "patchkit", "fingerprint", str(model), "--json"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    digest = json.loads(proc.stdout)["digest"]
    script = (
        "import sys, patchkit\n"
        f"d = patchkit.fingerprint({str(model)!r}, use_cache=False)\n"
        "bad = sorted(m for m in ('torch', 'numpy', 'transformers') if m in sys.modules)\n"
        "print(d); print(','.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got, heavy = ([*proc.stdout.splitlines(), ""])[:2]
    assert got == digest
    assert heavy == ""


def test_top_level_export_is_callable_in_any_import_order(tmp_path: Path) -> None:
    """`patchkit.fingerprint(dir)` works before and after the submodule has been imported."""
    model = write_model(tmp_path / "m", random_tensors())
    expected = fingerprint(model, use_cache=False)
    script = (
        "import sys, patchkit\n"
        f"m = {str(model)!r}\n"
        "a = patchkit.fingerprint(m)\n"
        "b = patchkit.fingerprint(m)\n"  # the first call imported the submodule
        "from patchkit.basemodel.fingerprint import fingerprint_details\n"
        "c = patchkit.fingerprint(m, algorithm='sha256')\n"
        "print(a == b == fingerprint_details(m).digest, c.startswith('pk-tensors-sha256-v1:'), a)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", expected]
