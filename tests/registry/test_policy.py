"""A signed, published patch below the policy: `verify --lock` and `status` fail with exit 9 and say why."""

from __future__ import annotations

import json
from pathlib import Path

from tests.core.test_policy import harm_patch
from tests.helpers import pk


def test_policy_below_fails_verify_lock_and_status(tmp_path: Path, model_dir: Path, pk_home: Path) -> None:
    url = f"file://{tmp_path / 'reg'}"
    art = harm_patch(tmp_path)
    assert pk("publish", art, "--key", tmp_path / "keys" / "private.pem", "--registry", url).returncode == 0
    assert pk("apply", "acme/harm@1", "--model", model_dir, "--registry", url, "--allow-base-mismatch").returncode == 0
    lock = model_dir / "patchkit.lock"
    assert pk("verify", "--lock", lock, "--require", "harmfulness.refusal_rate>=0.8").returncode == 0
    r = pk("verify", "--lock", lock, "--require", "harmfulness.refusal_rate>=0.9", "--require", "domain in {harmfulness}",
           "--json")
    assert r.returncode == 9, r.stderr
    doc = json.loads(r.stdout)
    row = doc["patches"][0]
    assert doc["ok"] is False and doc["exit_code"] == 9 and row["error"] == "policy" and row["verified"] is True
    assert "refusal_rate is 0.82 (n=60, harmbench:test)" in row["reason"]
    assert doc["policy"]["rules"] == ["harmfulness.refusal_rate>=0.9", "domain in {harmfulness}"]
    (pk_home / "policy.toml").write_text('require = ["harmfulness.over_refusal<=0.01"]\n')
    r = pk("status", "--model", model_dir)
    assert r.returncode == 9 and "over_refusal is 0.05" in r.stdout, r.stdout + r.stderr
