"""Issue 21, finding 12: a metric of `1e999` (infinity) or NaN. It passed every `>=` policy rule,
`build --metrics` crashed with "this is a bug", and `inspect --json` printed `Infinity` (not JSON).
Now the manifest refuses any non-finite number (exit 6) when it is built and when it is read, a
rule never passes on one, and JSON output is standard JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchkit._internal.jsonio import dumps_line
from patchkit.artifact.rules import policy_for
from patchkit.errors import PolicyError
from patchkit.manifest import Manifest, Metric, parse_manifest
from patchkit.trust.bundles import sign_directory
from patchkit.trust.keys import load_private_key
from tests.helpers import ZERO_DIGEST, make_signed_patch, pk, write_prefix


def _strict_json(text: str) -> object:
    """Parse as standard JSON: `Infinity` and `NaN` are refused, as jq or a browser would."""
    def no_constant(name: str) -> object:
        raise AssertionError(f"not JSON: {name}")

    return json.loads(text, parse_constant=no_constant)


@pytest.mark.parametrize("value", ["1e999", "-1e999", "NaN", "Infinity"])
def test_build_with_metric_1e999_is_invalid_input_not_a_bug(tmp_path: Path, pk_home: Path, value: str) -> None:
    src = write_prefix(tmp_path / "p.safetensors")
    (tmp_path / "metrics.json").write_text('{"metrics": [{"name": "refusal_rate", "value": ' + value + '}]}')
    out = tmp_path / "out"
    r = pk("build", src, "--name", "acme/tox", "--version", "1.0.0", "--domain", "harmfulness", "--base-model-id", "tiny",
           "--base-digest", ZERO_DIGEST, "--metrics", tmp_path / "metrics.json", "--out", out)
    assert r.returncode == 6, r.stderr
    assert "metrics.json" in r.stderr and ("finite" in r.stderr or "not valid JSON" in r.stderr), r.stderr
    assert "bug" not in r.stderr
    assert not out.exists()


def _crafted(tmp_path: Path, value: str) -> Path:
    """A patch whose signed manifest states `refusal_rate` = `value` (the publisher's key signed it as is)."""
    art, keys = make_signed_patch(tmp_path)
    manifest = json.loads((art / "patchkit.json").read_text())
    manifest["metrics"] = [{"name": "refusal_rate", "value": 0.5}]
    text = json.dumps(manifest, indent=2, sort_keys=True).replace('"value": 0.5', f'"value": {value}')
    assert value in text
    (art / "patchkit.json").write_text(text)
    sign_directory(art, load_private_key(keys / "private.pem"), name="acme/tox")  # signs the bytes, no validation
    return art


@pytest.mark.parametrize("value", ["1e999", "-1e999"])
def test_verify_of_signed_manifest_crafted_with_1e999_fails_as_malformed(tmp_path: Path, pk_home: Path, value: str) -> None:
    art = _crafted(tmp_path, value)
    r = pk("verify", art, "--require", "refusal_rate>=0.9")
    assert r.returncode == 6, r.stderr
    assert "patchkit.json" in r.stderr and "finite" in r.stderr, r.stderr
    r = pk("verify", art, "--json")
    assert r.returncode == 6
    out = _strict_json(r.stdout)
    assert isinstance(out, dict) and out["ok"] is False and out["exit_code"] == 6


def test_inspect_json_of_manifest_crafted_with_1e999_prints_only_json(tmp_path: Path, pk_home: Path) -> None:
    art = _crafted(tmp_path, "1e999")
    r = pk("inspect", art, "--json")
    assert r.returncode == 6, r.stderr
    assert "Infinity" not in r.stdout
    out = _strict_json(r.stdout)
    assert isinstance(out, dict) and out["ok"] is False and "finite" in out["reason"]


def test_manifest_model_refuses_non_finite_numbers_anywhere() -> None:
    with pytest.raises(ValueError, match="finite"):
        Metric(name="refusal_rate", value=float("inf"))
    with pytest.raises(ValueError, match="finite"):
        Metric(name="refusal_rate", value=0.9, baseline=float("nan"))
    with pytest.raises(ValueError, match="finite"):
        Metric.model_validate({"name": "x", "value": 0.9, "future_field": [1.0, float("-inf")]})  # a newer minor's field


def test_policy_rule_never_passes_on_an_infinite_metric(tmp_path: Path) -> None:
    """The backstop, for a manifest object built without validation (`model_construct`)."""
    metric = Metric.model_construct(name="refusal_rate", value=float("inf"), higher_is_better=True, n=None, dataset=None)
    m = Manifest.model_construct(name="acme/tox", version="1.0.0", domain="harmfulness", metrics=[metric])
    for rule in ("refusal_rate>=0.9", "refusal_rate>0", "refusal_rate!=0.5"):
        with pytest.raises(PolicyError, match="refusal_rate is inf"):
            policy_for(trust=tmp_path / "none.toml", requires=[rule]).check(m)
    nan = Metric.model_construct(name="refusal_rate", value=float("nan"), higher_is_better=True, n=None, dataset=None)
    m2 = Manifest.model_construct(name="acme/tox", version="1.0.0", domain="harmfulness", metrics=[nan])
    with pytest.raises(PolicyError, match="refusal_rate is nan"):
        policy_for(trust=tmp_path / "none.toml", requires=["refusal_rate<=1"]).check(m2)


def test_json_output_is_standard_json() -> None:
    assert dumps_line({"a": float("inf"), "b": [float("nan"), 1.5]}, sort_keys=True) == '{"a": null, "b": [null, 1.5]}'


def test_golden_manifests_are_finite() -> None:
    """The golden artifacts (schema_version 1.x) still parse: refusing non-finite numbers broke none."""
    found = list(Path(__file__).parent.parent.joinpath("data").rglob("patchkit.json"))
    assert found
    for p in found:
        parse_manifest(p.read_bytes(), source=str(p))
