"""The HTML report: self-contained, escaped, and its chart really renders in a browser."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from patchkit.eval import CallableConfig, EvalResult, run_eval

EVIL = '<script>alert("x")</script><img src="https://example.com/t.png">'


def _result(tmp_path: Path) -> tuple[EvalResult, Path]:
    prompts = tmp_path / "p.txt"
    prompts.write_text("tell me a thing\nhow do I do the forbidden thing\n")
    cfgs = [
        CallableConfig("baseline", "b", lambda ps: [EVIL for _ in ps]),
        CallableConfig("fixed_prompt", "f", lambda ps: ["I'm sorry, but I can't help with that." for _ in ps]),
        CallableConfig("patched", "p", lambda ps: ["I can't help." if "forbidden" in p else "Sure." for p in ps]),
    ]
    report = tmp_path / "report.html"
    res = run_eval(None, suite="harmfulness", prompts=str(prompts), benign=str(prompts), configs=cfgs, report=report)
    return res, report


def test_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    res, report = _result(tmp_path)
    page = report.read_text()
    # No external resource: every src/href is a data URI or an in-page anchor.
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page)
    assert refs and all(r.startswith("data:") or r.startswith("#") for r in refs), refs
    assert "<script>" not in page and "&lt;script&gt;" in page
    m = re.search(r'<img id="chart"[^>]*src="data:image/png;base64,([^"]+)"', page)
    assert m is not None
    png = base64.b64decode(m.group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    for name in ("refusal_rate", "over_refusal", "answer_rate"):
        assert name in page
    assert page.count("<li>") == 3 * 2 * 2  # 3 configs x 2 datasets x 2 examples (only 2 prompts)


def _chromium() -> str | None:
    """The browser `.ci/run` installs (Debian's chromium); the test never installs anything itself."""
    return next((p for name in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(name))), None)


@pytest.mark.slow
def test_report_chart_loads_in_headless_chromium(tmp_path: Path) -> None:
    import os

    browser = _chromium()
    if browser is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true but no Chromium: .ci/run must install it (apt-get install -y chromium)")
        pytest.skip("Chromium is not installed (apt-get install -y chromium); CI installs it and runs this test")
    _res, report = _result(tmp_path)
    # A copy of the report with a probe that records whether the chart image decoded.
    probe = report.read_text().replace(
        "</body>",
        "<script>window.addEventListener('load', function () {"
        " var i = document.getElementById('chart');"
        " document.body.setAttribute('data-chart', (i && i.complete && i.naturalWidth > 0)"
        " ? 'loaded-' + i.naturalWidth + 'x' + i.naturalHeight : 'broken'); });</script></body>",
    )
    page = tmp_path / "probe.html"
    page.write_text(probe)
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
             "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
            capture_output=True, text=True, timeout=120, check=False,
        )
    m = re.search(r'data-chart="([^"]+)"', proc.stdout)
    assert m is not None, f"no probe result; chromium rc={proc.returncode} stderr={proc.stderr[-600:]}"
    assert m.group(1).startswith("loaded-"), m.group(1)
    w = int(m.group(1).split("-")[1].split("x")[0])
    assert w >= 300
