"""Policy on the signed manifest: `--require` rules and policy.toml, with exit code 9 for a patch below it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchkit.artifact.rules import parse_rule, policy_for
from patchkit.errors import PolicyError, UsageError
from patchkit.manifest import parse_manifest
from tests.helpers import ZERO_DIGEST, pk, write_prefix

METRICS = {"metrics": [
    {"name": "refusal_rate", "value": 0.82, "higher_is_better": True, "dataset": "harmbench:test", "n": 60},
    {"name": "over_refusal", "value": 0.05, "higher_is_better": False, "dataset": "benign:test", "n": 40},
]}


def harm_patch(tmp: Path, *, sign: bool = True) -> Path:
    """A signed harmfulness patch whose signed metrics say 82% refusal (n=60) and 5% over-refusal."""
    (tmp / "metrics.json").write_text(json.dumps(METRICS))
    src = write_prefix(tmp / "p.safetensors")
    out = tmp / "harm"
    keys = tmp / "keys"
    assert pk("keys", "generate", "--out", keys).returncode == 0
    assert pk("trust", "add", keys / "public.pem", "--scope", "acme/*").returncode == 0
    r = pk("build", src, "--name", "acme/harm", "--version", "1.0.0", "--domain", "harmfulness", "--base-model-id", "tiny",
           "--base-digest", ZERO_DIGEST, "--metrics", tmp / "metrics.json", "--out", out)
    assert r.returncode == 0, r.stderr
    if sign:
        assert pk("sign", out, "--key", keys / "private.pem").returncode == 0
    return out


@pytest.mark.parametrize(("rule", "ok"), [
    ("harmfulness.refusal_rate>=0.8", True),
    ("harmfulness.refusal_rate >= 0.9", False),
    ("refusal_rate>0.5", True),
    ("harmfulness.over_refusal<=0.1", True),
    ("harmfulness.over_refusal<0.01", False),
    ("toxicity.toxicity_mean<=0.1", True),  # a toxicity rule does not apply to a harmfulness patch
    ("toxicity_mean<=0.1", False),  # unqualified: every patch must state it
    ("domain in {harmfulness,toxicity}", True),
    ("domain in {toxicity, bias}", False),
    ("domain not in {bias}", True),
    ("name == acme/harm", True),
    ("publisher != 'Acme Corp'", True),
    ("base_model.id in {tiny}", True),
])
def test_rules_against_a_signed_manifest(rule: str, ok: bool) -> None:
    from patchkit.artifact.rules import Policy

    m = parse_manifest({"schema_version": "1.0", "name": "acme/harm", "version": "1.0.0", "domain": "harmfulness",
                        "base_model": {"id": "tiny", "digest": ZERO_DIGEST, "hidden_size": 64},
                        "prefix": {"num_virtual_tokens": 4, "token_dim": 64, "dtype": "F32", "sha256": "0" * 64},
                        "metrics": METRICS["metrics"]})
    p = Policy([parse_rule(rule)], ["test"])
    if ok:
        p.check(m)
    else:
        with pytest.raises(PolicyError) as info:
            p.check(m)
        assert info.value.exit_code == 9 and rule.split()[0].split(">")[0].split("<")[0] in info.value.message


@pytest.mark.parametrize("rule", ["utility.over_refusal<=0.1", "refusal_rate>=lots", "domain ~ harm", "name >= a",
                                  "domain in {}", "refusal_rate>=inf", ""])
def test_malformed_rules_are_usage_errors(rule: str) -> None:
    with pytest.raises(UsageError):
        parse_rule(rule)


def test_policy_below_is_refused_with_exit_9_and_a_one_line_reason(tmp_path: Path) -> None:
    art = harm_patch(tmp_path)
    r = pk("verify", art, "--require", "harmfulness.refusal_rate>=0.9", "--require", "domain in {harmfulness,toxicity}")
    assert r.returncode == 9, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "harmfulness.refusal_rate>=0.9" in lines[0] and "refusal_rate is 0.82 (n=60, harmbench:test)" in lines[0]
    r = pk("verify", art, "--require", "harmfulness.refusal_rate>=0.8", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["policy"]["rules"] == ["harmfulness.refusal_rate>=0.8"]
    r = pk("verify", art, "--require", "harmfulness.refusal_rate>=0.9", "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 9 and doc["ok"] is False and doc["error"] == "policy" and doc["exit_code"] == 9


def test_policy_below_an_unsigned_patch_is_an_integrity_failure_first(tmp_path: Path) -> None:
    art = harm_patch(tmp_path, sign=False)
    assert pk("verify", art, "--require", "harmfulness.refusal_rate>=0.9").returncode == 3


def test_policy_file_beside_the_trust_store(tmp_path: Path, pk_home: Path) -> None:
    art = harm_patch(tmp_path)
    (pk_home / "policy.toml").write_text('require = ["harmfulness.refusal_rate>=0.9"]\n')
    r = pk("verify", art)
    assert r.returncode == 9 and "refusal_rate is 0.82" in r.stderr
    # a CI trust store has its own policy beside it (or none)
    ci = tmp_path / "ci"
    ci.mkdir()
    assert pk("trust", "add", tmp_path / "keys" / "public.pem", "--scope", "acme/*", "--trust", ci / "trust.toml").returncode == 0
    assert pk("verify", art, "--trust", ci / "trust.toml").returncode == 0
    (ci / "policy.toml").write_text('require = ["domain in {toxicity}"]\n')
    r = pk("verify", art, "--trust", ci / "trust.toml")
    assert r.returncode == 9 and "domain is 'harmfulness'" in r.stderr, r.stderr
    r = pk("verify", art, "--trust", ci / "trust.toml", "--policy", tmp_path / "missing.toml")
    assert r.returncode == 7
    (ci / "policy.toml").write_text('requires = ["typo"]\n')
    r = pk("verify", art, "--trust", ci / "trust.toml")
    assert r.returncode == 6 and "unknown key" in r.stderr


def test_policy_for_combines_the_file_and_the_flags(tmp_path: Path) -> None:
    trust = tmp_path / "trust.toml"
    (tmp_path / "policy.toml").write_text('require = ["domain in {harmfulness}"]\n')
    p = policy_for(trust=trust, requires=["harmfulness.refusal_rate>=0.9"])
    assert [r.text for r in p.rules] == ["domain in {harmfulness}", "harmfulness.refusal_rate>=0.9"]
    assert p.sources == [str(tmp_path / "policy.toml"), "--require"]
    assert not policy_for(trust=tmp_path / "elsewhere" / "trust.toml")


def test_one_constructor_reads_the_trust_store_and_the_rules_beside_it(tmp_path: Path, pk_home: Path) -> None:
    """`VerificationPolicy.load` is where every command and API call gets its rules (issue 21, finding 6)."""
    from patchkit.artifact.verify import VerificationPolicy
    from patchkit.trust.store import TrustStore

    (pk_home / "policy.toml").write_text('require = ["domain in {harmfulness}"]\n')
    default = VerificationPolicy.load()
    assert [r.text for r in default.rules.rules] == ["domain in {harmfulness}"]
    assert default.rules.sources == [str(pk_home / "policy.toml")]
    assert [r.text for r in VerificationPolicy.build(TrustStore.load()).rules.rules] == ["domain in {harmfulness}"]
    ci = tmp_path / "ci"
    ci.mkdir()
    (ci / "trust.toml").write_text("")
    assert not VerificationPolicy.load(ci / "trust.toml").rules  # another store: the policy beside it (none)
    assert not VerificationPolicy.load(TrustStore(None, [])).rules  # held in memory: nothing is beside it
    both = VerificationPolicy.load(ci / "trust.toml", policy_file=pk_home / "policy.toml", require=["name == acme/x"])
    assert [r.text for r in both.rules.rules] == ["domain in {harmfulness}", "name == acme/x"]


def test_patchkit_verify_applies_the_policy_file_too(tmp_path: Path, pk_home: Path) -> None:
    import patchkit

    art = harm_patch(tmp_path)
    assert patchkit.verify(art).name == "acme/harm"
    (pk_home / "policy.toml").write_text('require = ["harmfulness.refusal_rate>=0.9"]\n')
    with pytest.raises(PolicyError, match="refusal_rate is 0.82"):
        patchkit.verify(art)
