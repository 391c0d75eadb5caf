"""A `--require` rule for a domain no pinned patch has fails (exit 9) instead of passing silently
(issue 22, item 15)."""

from __future__ import annotations

import json
from pathlib import Path

from patchkit import constants
from tests.core.test_policy import harm_patch
from tests.helpers import pk
from tests.registry.conftest import make_vendor


def test_a_rule_no_pinned_patch_can_meet_fails(tmp_path: Path, model_dir: Path, pk_home: Path) -> None:
    registry = f"file://{tmp_path / 'registry'}"
    make_vendor(tmp_path / "vendor").publish("1.0.0", registry, base_model=model_dir)  # a toxicity patch, no metrics
    assert pk("apply", "acme/tox@1", "--model", model_dir, "--registry", registry).returncode == 0
    lock = model_dir / constants.LOCK_FILE
    assert pk("verify", "--lock", lock).returncode == 0

    rule = "harmfulness.refusal_rate>=0.9"
    r = pk("verify", "--lock", lock, "--require", rule)
    assert r.returncode == 9, r.stdout + r.stderr
    report = " ".join(r.stdout.split())
    assert f"no pinned patch has a metric harmfulness.refusal_rate (none is of domain harmfulness); `{rule}` cannot be met" in report
    assert "  ok      acme/tox@1.0.0" in r.stdout  # the pin itself holds: the policy is what fails
    assert r.stderr.startswith("patchkit: error: FAILED the policy for the 1 patch pinned by") and "exit 9" in r.stderr

    r = pk("verify", "--lock", lock, "--require", rule, "--json")
    doc = json.loads(r.stdout)
    assert r.returncode == 9 and doc["ok"] is False and doc["exit_code"] == 9
    assert doc["patches"][0]["ok"] is True and len(doc["policy"]["unmet"]) == 1
    r = pk("ci", "verify-locks", lock, "--require", rule)  # what the Action runs says the same
    assert r.returncode == 9 and "cannot be met" in " ".join(r.stdout.split())

    # a rule for the domain the lock does hold still applies per patch; policy.toml rules stay conditional
    assert pk("verify", "--lock", lock, "--require", "domain in {toxicity}").returncode == 0
    (pk_home / "policy.toml").write_text(f'require = ["{rule}"]\n')
    r = pk("verify", "--lock", lock)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_single_patch_of_another_domain_fails_the_rule(tmp_path: Path) -> None:
    art = harm_patch(tmp_path)  # harmfulness, refusal_rate 0.82
    r = pk("verify", art, "--require", "toxicity.toxicity_mean<=0.1")
    assert r.returncode == 9, r.stderr
    assert "no patch has a metric toxicity.toxicity_mean (none is of domain toxicity)" in r.stderr
    assert pk("verify", art, "--require", "harmfulness.refusal_rate>=0.8").returncode == 0
