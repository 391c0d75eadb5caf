from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from patchkit.errors import InvalidInputError
from patchkit.manifest import Manifest, json_schema, parse_manifest

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "manifests" / "patchkit-manifest-1.schema.json"


def sample() -> dict[str, Any]:
    return Manifest(
        name="acme/llama3-tox", version="1.2.0", domain="toxicity",
        base_model={"id": "meta/llama3", "digest": "pk-tensors-blake3-v1:" + "ab" * 32, "hidden_size": 64},
        prefix={"num_virtual_tokens": 4, "token_dim": 64, "dtype": "F32", "sha256": "cd" * 32},
    ).to_dict()


def test_schema_file_is_generated_from_the_model() -> None:
    committed = json.loads(SCHEMA.read_text())
    assert committed == json_schema(), "manifests/ schema is stale: run `python -m patchkit.manifest > manifests/patchkit-manifest-1.schema.json`"


def test_round_trip_is_byte_stable() -> None:
    m = parse_manifest(sample())
    assert parse_manifest(m.to_json()).to_json() == m.to_json()


def test_unknown_major_version_is_refused() -> None:
    d = sample() | {"schema_version": "2.0"}
    with pytest.raises(InvalidInputError, match="unsupported manifest schema_version 2.0"):
        parse_manifest(d)


def test_newer_minor_keeps_unknown_fields() -> None:
    d = sample() | {"schema_version": "1.4", "future_field": {"x": [1, 2]}}
    d["prefix"]["future_nested"] = "kept"
    m = parse_manifest(d)
    out = json.loads(m.to_json())
    assert out["future_field"] == {"x": [1, 2]}
    assert out["prefix"]["future_nested"] == "kept"


def test_same_minor_refuses_unknown_fields() -> None:
    with pytest.raises(InvalidInputError, match="unknown field"):
        parse_manifest(sample() | {"surprise": 1})


def test_duplicate_json_keys_are_refused() -> None:
    text = json.dumps(sample())
    dup = text[:-1] + ', "name": "acme/other"}'
    with pytest.raises(InvalidInputError, match="duplicate JSON key 'name'"):
        parse_manifest(dup)


@pytest.mark.parametrize("name", ["acme/../x", "Acme/x", "acme/x y", "acme/x/y", "/acme/x", "acme", "acme//x", "acme/.x", ""])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid field name"):
        parse_manifest(sample() | {"name": name})


@pytest.mark.parametrize("version", ["1", "1.2", "v1.2.0", "01.2.0", "1.2.0-", "1.2.0+", "latest", "1.2.3.4"])
def test_non_semver_versions_are_refused(version: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid field version"):
        parse_manifest(sample() | {"version": version})


@pytest.mark.parametrize("version", ["0.0.1", "1.2.0-rc.1", "1.2.0+build.5", "10.20.30-alpha.beta.1"])
def test_semver_versions_are_accepted(version: str) -> None:
    assert parse_manifest(sample() | {"version": version}).version == version


def test_bad_digest_domain_and_dtype_are_refused() -> None:
    d = sample()
    d["base_model"]["digest"] = "sha256:abc"
    with pytest.raises(InvalidInputError, match="digest"):
        parse_manifest(d)
    with pytest.raises(InvalidInputError, match="domain"):
        parse_manifest(sample() | {"domain": "politics"})
    d = sample()
    d["prefix"]["dtype"] = "I32"
    with pytest.raises(InvalidInputError, match="prefix.dtype"):
        parse_manifest(d)


def test_training_selection_needs_schema_1_2_and_leaves_older_bytes_alone() -> None:
    selection = {"select": "refusal s.t. over_refusal<=0.05", "rule": "refusal s.t. over_refusal<=0.05", "scorer": "proxy",
                 "refuse_rows": 2, "answer_rows": 2, "constraint_met": True,
                 "anchors": {"base": {"refusal": 0.0, "over_refusal": 0.0}},
                 "proxy_agreement": {"n": 4, "agree": 3, "kappa": 0.5}}
    plain = sample()
    with_sel = {**plain, "training": {**plain["training"], "selection": selection}}
    got = parse_manifest({**with_sel, "schema_version": "1.2"})
    assert got.training.selection is not None and got.training.selection.proxy_agreement == selection["proxy_agreement"]
    assert parse_manifest(got.to_json()).to_json() == got.to_json()
    for older in ("1.0", "1.1"):
        with pytest.raises(InvalidInputError, match="training.selection needs schema_version 1.2"):
            parse_manifest({**with_sel, "schema_version": older})
    assert "selection" not in parse_manifest({**plain, "schema_version": "1.0"}).to_dict()["training"]
    bad = {**with_sel, "schema_version": "1.2", "training": {**plain["training"], "selection": {**selection, "scorer": "guess"}}}
    with pytest.raises(InvalidInputError, match="training.selection.scorer"):
        parse_manifest(bad)


def test_gate_needs_schema_1_3_round_trips_and_validates_its_fields() -> None:
    gate = {"file": "gate.safetensors", "sha256": "ab" * 32, "layer": 17, "position": "last-prompt-token", "bias": 0.2,
            "threshold": -1.0, "recall_target": 0.99, "fit": "logistic-l2-lbfgs-standardised-v1",
            "stats": {"n_refuse": 193, "n_answer": 180, "cv_auroc": 0.967}}
    plain = sample()
    got = parse_manifest({**plain, "schema_version": "1.3", "gate": gate})
    assert got.gate is not None and got.gate.layer == 17 and got.gate.threshold == -1.0
    assert parse_manifest(got.to_json()).to_json() == got.to_json()
    for older in ("1.0", "1.1", "1.2"):
        with pytest.raises(InvalidInputError, match="gate needs schema_version 1.3"):
            parse_manifest({**plain, "schema_version": older, "gate": gate})
    assert "gate" not in parse_manifest({**plain, "schema_version": "1.0"}).to_dict()
    for field, value in (("file", "../gate.safetensors"), ("layer", 0), ("recall_target", 0.0), ("threshold", float("nan"))):
        with pytest.raises(InvalidInputError, match=f"gate.{field}|not a finite number"):
            parse_manifest({**plain, "schema_version": "1.3", "gate": {**gate, field: value}})
