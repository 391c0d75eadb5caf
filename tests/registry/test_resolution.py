"""Resolution and yanks, the same suite against the local registry and the (fake) Hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchkit.errors import NotFoundError, UsageError
from patchkit.registry import pull, versions, yank
from tests.helpers import pk
from tests.registry.conftest import Vendor
from tests.registry.hubserver import FakeHub


@pytest.fixture
def published(vendor: Vendor, registry_url: str) -> str:
    for v in ("1.0.0", "1.1.0", "1.2.0-rc.1", "2.0.0"):
        vendor.publish(v, registry_url)
    return registry_url


CASES = [
    ("@1", "1.1.0"),
    ("@^1.0", "1.1.0"),
    ("@~1.1.0", "1.1.0"),
    ("@1.0", "1.0.0"),
    ("@>=1.0,<2", "1.1.0"),
    ("@1.2.0-rc.1", "1.2.0-rc.1"),
    ("@>=1.2.0-rc.1,<2", "1.2.0-rc.1"),
    ("@latest", "2.0.0"),
    ("", "2.0.0"),
    ("@1.0.0", "1.0.0"),
    ("@==2.0.0", "2.0.0"),
]


def test_resolution(published: str) -> None:
    for spec, expected in CASES:
        r = pull(f"acme/tox{spec}", registry=published)
        assert r.version == expected, spec
        assert r.path.is_dir() and (r.path / "patchkit.json").is_file()
        assert json.loads((r.path / "patchkit.json").read_text())["version"] == expected
        assert r.digest.startswith("sha256:") and not r.warnings


def test_yank_skips_ranges_and_warns_on_exact_pin(published: str, vendor: Vendor) -> None:
    out = yank("acme/tox@1.1.0", "leaks the system prompt", vendor.key, registry=published)
    assert out.index_version == 5  # four publishes, then the yank
    assert pull("acme/tox@1", registry=published).version == "1.0.0"
    assert pull("acme/tox@^1.0", registry=published).version == "1.0.0"
    pinned = pull("acme/tox@1.1.0", registry=published)
    assert pinned.version == "1.1.0" and pinned.yanked
    assert any("leaks the system prompt" in w for w in pinned.warnings)
    listing = versions("acme/tox", registry=published)
    row = next(v for v in listing.versions if v.version == "1.1.0")
    assert row.yanked and row.reason == "leaks the system prompt"


def test_cli_yank_pull_warning_and_versions_json(published: str, vendor: Vendor) -> None:
    r = pk("yank", "acme/tox@1.1.0", "--reason", "bad refusals", "--key", vendor.key, "--registry", published)
    assert r.returncode == 0, r.stderr
    r = pk("pull", "acme/tox@1.1.0", "--registry", published, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == "1.1.0"
    assert "bad refusals" in r.stderr and "WARNING" in r.stderr
    r = pk("versions", "acme/tox", "--registry", published, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["name"] == "acme/tox"
    assert [v["version"] for v in doc["versions"]] == ["1.0.0", "1.1.0", "1.2.0-rc.1", "2.0.0"]
    assert {k for k in doc["versions"][0]} >= {"version", "yanked", "reason", "digest"}
    assert doc["versions"][1]["yanked"] is True and doc["versions"][1]["reason"] == "bad refusals"
    r = pk("unyank", "acme/tox@1.1.0", "--key", vendor.key, "--registry", published)
    assert r.returncode == 0, r.stderr
    assert pull("acme/tox@1", registry=published).version == "1.1.0"


def test_nothing_matches_is_not_found(published: str) -> None:
    with pytest.raises(NotFoundError):
        pull("acme/tox@3", registry=published)
    with pytest.raises(NotFoundError):
        pull("acme/nope@1", registry=published)
    r = pk("pull", "acme/tox@^3", "--registry", published, "--json")
    assert r.returncode == 7
    assert json.loads(r.stdout)["ok"] is False


def test_republish_is_refused(published: str, vendor: Vendor) -> None:
    with pytest.raises(UsageError, match="already published"):
        vendor.publish("1.0.0", published)
    art = vendor.artifact("1.0.0", seed=99)
    r = pk("publish", art, "--key", vendor.key, "--registry", published)
    assert r.returncode == 2 and "already published" in r.stderr


def test_bad_spec_is_invalid_input(published: str) -> None:
    r = pk("pull", "acme/tox@>>1", "--registry", published)
    assert r.returncode == 6, r.stderr


def test_publish_layout_one_commit_per_version_tagged(published: str, vendor: Vendor, pk_home: Path) -> None:
    from patchkit.registry import open_registry

    reg = open_registry(published)
    refs = reg.refs("acme/tox")
    assert refs is not None
    assert {t for t in refs.tags if not t.startswith("index-")} == {"v1.0.0", "v1.1.0", "v1.2.0-rc.1", "v2.0.0"}
    # every signed index is tagged too, so a main moved back cannot hide one from a publisher
    assert {t for t in refs.tags if t.startswith("index-")} == {"index-v1", "index-v2", "index-v3", "index-v4"}
    listing = versions("acme/tox", registry=published)
    for row in listing.versions:
        commit = refs.tags["v" + row.version]
        assert row.commit == commit
        card = reg.read("acme/tox", commit, "README.md", 1 << 20)
        manifest = reg.read("acme/tox", commit, "patchkit.json", 1 << 20)
        assert card is not None and card.startswith(b"---") and b"library_name: patchkit" in card
        assert manifest is not None and json.loads(manifest)["version"] == row.version


def test_hub_uses_hf_token_and_endpoint(vendor: Vendor, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_test_token_123")
    vendor.publish("1.0.0", "hf://")
    assert hub.requests, "the client did not talk to HF_ENDPOINT"
    assert "Bearer hf_test_token_123" in hub.authorizations
    r = pk("verify", "acme/tox@1", "--registry", "hf://", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["version"] == "1.0.0"
    r = pk("inspect", "acme/tox@1.0.0", "--registry", "hf://", "--json")
    assert r.returncode == 0, r.stderr


def test_hub_offline_is_a_registry_error(vendor: Vendor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = pk("pull", "acme/tox", "--registry", "hf://")
    assert r.returncode == 8 and "HF_HUB_OFFLINE" in r.stderr
