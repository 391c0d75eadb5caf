"""Attack: a frozen or vanished registry keeps pinned patches passing forever, hiding revocations and yanks.

Before the fix, when the registry's signed index had expired (frozen: it serves the last index and
nothing newer) or the registry could not be reached at all, a pin whose copy was cached passed with
a warning: `verify --lock` exited 0 and `apply --frozen`, `generate`, `patchkit.load` and `serve` went
on. Now a pin needs fresh evidence: the newest signed index this machine has seen for the name,
unexpired. Offline use within that expiry is accepted (one warning line); after it, every one of
those paths refuses with exit 3 (freeze) and says how it ends; with no index ever seen, exit 8.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from patchkit import constants
from patchkit._internal.clock import fmt_time, now_utc
from patchkit.errors import FreezeError
from patchkit.registry.cache import cache_root
from patchkit.registry.index import parse_index, sign_index
from patchkit.trust.keys import load_private_key
from tests.helpers import pk
from tests.registry.conftest import Attacker, Vendor, snapshot

LIFETIME_S = 6  # how long the publisher's last index is valid in these tests (time must really pass)


def last_index_expires_soon(vendor: Vendor, attacker: Attacker) -> str:
    """The publisher's last index, signed with a lifetime of seconds; the registry then freezes (serves
    it and nothing newer). Returns its expiry."""
    data = attacker.main_files(constants.INDEX_FILE)[constants.INDEX_FILE]
    index = parse_index(data, where="test").next()
    index.expires = fmt_time(now_utc() + timedelta(seconds=LIFETIME_S))
    new_data, sig = sign_index(index, load_private_key(vendor.key))
    attacker.set_main({constants.INDEX_FILE: new_data, constants.INDEX_SIG_FILE: sig})
    return index.expires


def wait_past(expires: str) -> None:
    from patchkit._internal.clock import parse_time

    while now_utc() <= parse_time(expires):
        time.sleep(0.25)


def applied(vendor: Vendor, registry_url: str, attacker: Attacker, model_dir: Path) -> tuple[Path, str]:
    """acme/tox@1.0.0 applied (and cached) while the index was fresh; returns the lock and the index's expiry."""
    from patchkit.registry.customer import apply

    vendor.publish("1.0.0", registry_url, base_model=model_dir)
    expires = last_index_expires_soon(vendor, attacker)
    apply(["acme/tox@1.0.0"], model_dir, registry=registry_url)  # in process: well within the lifetime
    return model_dir / constants.LOCK_FILE, expires


def said(r: subprocess.CompletedProcess[str]) -> str:
    """What a command told its user, on either stream, with line wrapping undone (`verify --lock` wraps its report)."""
    return " ".join((r.stdout + r.stderr).split())


def assert_freeze_refusal(r: subprocess.CompletedProcess[str], expires: str) -> None:
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    text = said(r)
    assert f"signed index for acme/tox expired at {expires}" in text, text
    assert "patchkit index refresh acme/tox" in text and "unreachable" in text, text


def test_freeze_frozen_registry_no_longer_passes_pinned_patches(vendor: Vendor, registry_url: str, attacker: Attacker,
                                                               model_dir: Path) -> None:
    lock, expires = applied(vendor, registry_url, attacker, model_dir)
    wait_past(expires)  # the registry serves the same index, now expired, and nothing newer
    before = snapshot(model_dir), snapshot(cache_root())
    assert_freeze_refusal(pk("verify", "--lock", lock), expires)
    r = pk("verify", "--lock", lock, "--json")
    assert r.returncode == 3 and json.loads(r.stdout)["patches"][0]["error"] == "integrity"
    assert_freeze_refusal(pk("apply", "--frozen", "--model", model_dir), expires)
    assert_freeze_refusal(pk("apply", "--locked", "acme/tox@1.0.0", "--model", model_dir, "--registry", registry_url), expires)
    assert_freeze_refusal(pk("generate", "--model", model_dir, "hello"), expires)
    r = pk("status", "--model", model_dir)  # from this machine alone: the evidence it holds has expired
    assert r.returncode == 3 and f"expired at {expires}" in r.stdout + r.stderr and "verify --lock" in r.stdout + r.stderr
    assert (snapshot(model_dir), snapshot(cache_root())) == before
    # the publisher re-signs: pins pass again
    assert pk("index", "refresh", "acme/tox", "--key", vendor.key, "--registry", registry_url).returncode == 0
    r = pk("verify", "--lock", lock)
    assert r.returncode == 0 and "WARNING" not in r.stderr, r.stderr


def test_freeze_gone_registry_passes_pins_only_until_the_last_index_expires(vendor: Vendor, registry_url: str,
                                                                           attacker: Attacker, model_dir: Path,
                                                                           backend: str, pk_home: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    lock, expires = applied(vendor, registry_url, attacker, model_dir)
    if backend == "hub":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the Hub cannot be reached (here and in the CLI runs below)
    else:
        shutil.rmtree(pk_home / "registry")
    # Offline within the expiry is legitimate: one warning line says what stands in for the registry.
    # (in process: a CLI start could outlast the few seconds the index has left)
    from patchkit.registry.customer import verify_lock

    summary = verify_lock(lock)
    offline = [w for w in summary.warnings if "offline use is accepted until then" in w]
    assert summary.ok and len(offline) == 1 and len(summary.warnings) == 1, summary.warnings
    assert f"expires {expires}" in offline[0] and "the registry cannot be reached" in offline[0]
    wait_past(expires)
    assert_freeze_refusal(pk("verify", "--lock", lock), expires)
    assert_freeze_refusal(pk("apply", "--frozen", "--model", model_dir), expires)
    row = verify_lock(lock).rows[0]
    assert isinstance(row.error, FreezeError) and f"expired at {expires}" in row.error.message


def test_freeze_gone_registry_with_no_index_ever_seen_is_refused(vendor: Vendor, model_dir: Path, pk_home: Path,
                                                                  tmp_path: Path) -> None:
    """A cache copied in from elsewhere (an image, a backup) without the signed index that vouched for it."""
    url = f"file://{tmp_path / 'registry'}"
    vendor.publish("1.0.0", url, base_model=model_dir)
    assert pk("apply", "acme/tox@1.0.0", "--model", model_dir, "--registry", url).returncode == 0
    shutil.rmtree(pk_home / "state")
    shutil.rmtree(tmp_path / "registry")
    r = pk("verify", "--lock", model_dir / constants.LOCK_FILE)
    assert r.returncode == 8, (r.stdout, r.stderr)
    assert "has never verified a signed index of acme/tox" in said(r) and "apply --frozen" in said(r), said(r)
    assert pk("apply", "--frozen", "--model", model_dir).returncode == 8


def test_freeze_load_and_serve_refuse_pins_past_the_last_index(vendor: Vendor, registry_url: str, attacker: Attacker,
                                                               model_dir: Path) -> None:
    import patchkit
    from patchkit.serve.config import ServeConfig
    from patchkit.serve.errors import APIError
    from patchkit.serve.patches import PatchResolver
    from patchkit.trust.store import TrustStore
    from tests.serve.test_cli import RUNNER

    lock, expires = applied(vendor, registry_url, attacker, model_dir)
    resolver = PatchResolver(model_dir, ServeConfig(name="tiny", recheck_s=0.001), name="tiny", trust=TrustStore.load(),
                             registry=None)
    assert [p.ref for p in resolver.preload().patches] == ["acme/tox@1.0.0"]  # a server started in time
    wait_past(expires)
    with pytest.raises(APIError) as info:
        resolver.resolve("tiny")  # the running server checks its set again, and stops serving it
    # The client sees the stable code and a short reason; the expiry (and the hint) go to the server log.
    assert info.value.status == 403 and info.value.code == "index_expired", info.value.message
    assert info.value.detail is not None and f"expired at {expires}" in info.value.detail
    with pytest.raises(FreezeError, match=f"expired at {expires}"):
        patchkit.load(model_dir)
    r = subprocess.run([sys.executable, "-c", RUNNER, "serve", "--model", str(model_dir), "--port", "0"],
                       capture_output=True, text=True, timeout=180)
    assert_freeze_refusal(r, expires)
    assert "HEAVY=\n" in r.stderr, r.stderr  # refused before torch or the web stack loaded
    assert lock.exists()
