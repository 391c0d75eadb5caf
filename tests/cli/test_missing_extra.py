"""A core install (no torch, no web stack): every command that needs an extra says which one, with
one message shape and one exit code (issue 22, item 4: `generate` and `train` crashed with exit 1,
`serve` exited 2 and `eval` 7 for the same cause)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from patchkit.errors import MissingExtraError, UsageError
from tests.helpers import make_signed_patch, write_fake_model

# The CLI in a real process where the extras' modules cannot be imported, as in `pip install patchkit-llm`.
CORE_ONLY = (
    "import sys\n"
    "BLOCKED = {'torch', 'transformers', 'accelerate', 'fastapi', 'starlette', 'uvicorn', 'sse_starlette',\n"
    "           'prometheus_client', 'httpx2', 'matplotlib', 'numpy', 'safetensors', 'gguf', 'peft', 'tokenizers',\n"
    "           'profanity_check', 'sklearn', 'yaml'}\n"
    "class Blocker:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in BLOCKED:\n"
    "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
    "        return None\n"
    "sys.meta_path.insert(0, Blocker())\n"
    "from patchkit.cli import main\n"
    "main(sys.argv[1:])\n"
)


def _core(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CORE_ONLY, *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ), cwd=cwd, timeout=120)


def test_each_command_names_its_extra(tmp_path: Path) -> None:
    model = write_fake_model(tmp_path / "model")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hello"}\n')
    cases = {
        "generate": (["generate", "--model", model, "hello"], "torch and transformers", "runtime"),
        "chat": (["chat", "--model", model], "torch and transformers", "runtime"),
        "train": (["train", "--base", model, "--reference", "system-prompt:be safe", "--prompts", prompts,
                   "--domain", "toxicity", "--out", tmp_path / "run"], "accelerate", "train"),
        "eval": (["eval", "--model", model, "--suite", "toxicity", "--prompts", prompts, "--out", tmp_path / "m.json"],
                 "torch and transformers", "eval"),
        "serve": (["serve", "--model", model], "fastapi", "serve"),
        "demo": (["demo", "--workdir", tmp_path / "demo"], "torch", "train,eval"),
    }
    for command, (args, needs, extra) in cases.items():
        r = _core(*args, cwd=tmp_path)
        assert r.returncode == 2, (command, r.returncode, r.stderr)
        want = f"patchkit: error: 'patchkit {command}' needs "
        assert r.stderr.startswith(want) and needs in r.stderr, (command, r.stderr)
        assert f"which this install lacks (hint: pip install 'patchkit-llm[{extra}]')" in r.stderr, (command, r.stderr)
        assert len(r.stderr.splitlines()) == 1 and "unexpected" not in r.stderr and "Traceback" not in r.stderr
        assert r.stdout == "", command
        j = _core(*args, "--json", cwd=tmp_path)
        doc = json.loads(j.stdout)
        assert j.returncode == 2 and doc["ok"] is False and doc["error"] == "missing-extra" and doc["exit_code"] == 2
        assert doc["hint"] == f"pip install 'patchkit-llm[{extra}]'", command
    assert not (tmp_path / "run").exists() and not (tmp_path / "demo").exists()  # refused before any work


def test_core_commands_still_run_without_the_extras(tmp_path: Path) -> None:
    """The check is per command: the torch-free core (keys, fingerprint, export, verify) is not refused."""
    model = write_fake_model(tmp_path / "model")
    art, _ = make_signed_patch(tmp_path)
    for args in (["keys", "generate", "--out", tmp_path / "k"], ["fingerprint", model], ["verify", art],
                 ["export", art, "--out", tmp_path / "peft"], ["generate", "--help"]):
        r = _core(*args, cwd=tmp_path)
        assert r.returncode == 0, (args, r.stderr)
        assert "needs" not in r.stderr, args


def test_a_module_missing_later_gets_the_commands_extra() -> None:
    """A command that imports an optional module only on some path gets the same message, never exit 1."""
    err = MissingExtraError.from_import(ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib.pyplot"),
                                        "patchkit eval")
    assert err is not None and err.exit_code == 2 and isinstance(err, UsageError)
    assert err.one_line() == ("'patchkit eval' needs matplotlib, which this install lacks "
                              "(hint: pip install 'patchkit-llm[eval]')")
    err = MissingExtraError.from_import(ModuleNotFoundError("No module named 'torch'", name="torch"), "patchkit serve")
    assert err is not None and err.hint == "pip install 'patchkit-llm[serve]'"  # the command's extra, not torch's
    err = MissingExtraError.from_import(ModuleNotFoundError("No module named 'uvicorn'", name="uvicorn"), "patchkit fingerprint")
    assert err is not None and err.hint == "pip install 'patchkit-llm[serve]'"  # no extra for the command: the module's
    assert MissingExtraError.from_import(ModuleNotFoundError("No module named 'patchkit.nope'", name="patchkit.nope"),
                                         "patchkit generate") is None  # our own module missing is a bug (exit 1)


@pytest.mark.parametrize("command", ["keys generate", "trust add", "ci verify-locks"])
def test_subcommands_named_like_a_command_are_not_checked(command: str) -> None:
    from patchkit.errors import check_extra

    check_extra(f"patchkit {command}")  # `keys generate` is not `generate`: no extra needed, no error
