"""`--json` holds wherever it is written: before the command, between group and command, after it
(issue 22, item 6: `patchkit --json verify …` and `patchkit keys --json generate` printed text)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import typer

from patchkit.cli.app import app
from tests.helpers import make_signed_patch, pk, write_fake_model


def _json(*args: str | Path, code: int = 0) -> dict[str, Any]:
    r = pk(*args)
    assert r.returncode == code, (args, r.returncode, r.stderr)
    lines = r.stdout.splitlines()
    assert len(lines) == 1, (args, r.stdout)  # one JSON object, nothing else on stdout
    doc: dict[str, Any] = json.loads(lines[0])
    return doc


def test_json_before_between_and_after_give_the_same_object(tmp_path: Path) -> None:
    art, _ = make_signed_patch(tmp_path)
    model = write_fake_model(tmp_path / "model")
    for before, between, after in [
        (["--json", "verify", art], None, ["verify", art, "--json"]),
        (["--json", "trust", "list"], ["trust", "--json", "list"], ["trust", "list", "--json"]),
        (["--json", "config", "list"], ["config", "--json", "list"], ["config", "list", "--json"]),
        (["--json", "fingerprint", model, "--no-cache"], None, ["fingerprint", model, "--no-cache", "--json"]),
        (["--json", "cache", "list"], ["cache", "--json", "list"], ["cache", "list", "--json"]),
    ]:
        want = _json(*after)
        assert _json(*before) == want, before
        if between is not None:
            assert _json(*between) == want, between
    # a failure is one JSON object too, wherever --json is
    missing = tmp_path / "nope"
    assert _json("--json", "verify", missing, code=7) == _json("verify", missing, "--json", code=7)
    assert _json("--json", "verify", missing, code=7)["ok"] is False


def test_keys_generate_json_at_every_level(tmp_path: Path) -> None:
    for i, args in enumerate([["--json", "keys", "generate"], ["keys", "--json", "generate"], ["keys", "generate", "--json"]]):
        out = tmp_path / f"k{i}"
        doc = _json(*args, "--out", out)
        assert set(doc) == {"ok", "keyid", "private", "public"} and doc["public"] == str(out / "public.pem"), args
    r = pk("--json", "keys", "generate")  # a usage error (no --out) is JSON too
    assert r.returncode == 2 and json.loads(r.stdout)["error"] == "usage"


def test_every_command_takes_json() -> None:
    """The inheritance needs a --json option on each level; a command without one would print text."""
    root = typer.main.get_command(app)
    missing: list[str] = []

    def walk(cmd: click.Command, path: str) -> None:
        if not any("--json" in getattr(p, "opts", ()) for p in cmd.params):
            missing.append(path)
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}")

    walk(root, "patchkit")
    assert missing == []
