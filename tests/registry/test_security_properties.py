"""Property test over registry data: hostile index entries never leave their root or crash.

Hypothesis writes validly signed indexes (the publisher key is trusted for the name, so only
the content is hostile) whose commit ids, versions, file lists and names are drawn from
path-like, oversized, non-hex and plain random strings, and runs `pull` and `versions` on
them. Whatever it draws, patchkit may refuse (a PatchkitError: an exit code), but it may not
raise anything else (exit 1, a bug), and nothing outside the example's PATCHKIT_HOME may be
created, changed or deleted.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchkit import constants
from patchkit.errors import PatchkitError
from tests.registry.conftest import snapshot

_counter = itertools.count()

PATHLIKE = ["{decoy}", "{decoy}/.ssh", "../../victim", "../../../../../victim", "..", ".", "/", "", "~",
            "0" * 40 + "/..", "0" * 40 + "\n", "A" * 40, "a" * 40, "0" * 39, "0" * 41, "g" * 40]
commits = st.one_of(st.sampled_from(PATHLIKE), st.text(max_size=60),
                    st.from_regex(r"[0-9a-fA-F./\\-]{1,45}", fullmatch=True))
versions = st.one_of(st.sampled_from(["1.0.0", "1.0.0+../../x", "../1.0.0", "1.0.0/..", " 1.0.0", "1.0.0-rc.1",
                                      "1.0.0+build.1", "99999999999999999999.0.0"]), st.text(max_size=24))
file_names = st.one_of(st.sampled_from(["../x", "../../victim", "/etc/passwd", ".lock", "a/b", "..", "",
                                        constants.TENSOR_FILE, constants.MANIFEST_FILE, "x" * 300]),
                       st.text(max_size=24))
file_lists = st.dictionaries(file_names, st.one_of(st.integers(min_value=-3, max_value=1 << 40),
                                                   st.booleans(), st.text(max_size=3)), max_size=4)
index_names = st.sampled_from(["acme/x", "acme/../x", "../acme/x", "{decoy}", "ACME/X"])


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from patchkit.trust.keys import generate_keypair

    kp = generate_keypair(tmp_path_factory.mktemp("signer"))
    return kp.private, kp.public


def _publish_raw_index(root: Path, key: Path, body: dict[str, Any]) -> None:
    from patchkit.registry.local import LocalRegistry
    from patchkit.trust.bundles import sign_blobs
    from patchkit.trust.keys import load_private_key

    reg = LocalRegistry(root, f"file://{root}")
    reg.ensure_repo("acme/x")
    data = (json.dumps(body, sort_keys=True) + "\n").encode()
    sig = sign_blobs("acme/x", {constants.INDEX_FILE: data}, load_private_key(key), sig_name=constants.INDEX_SIG_FILE)
    reg.commit("acme/x", {constants.INDEX_FILE: data, constants.INDEX_SIG_FILE: sig}, "hostile", parent=reg.refs("acme/x").main)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(commit=commits, version=versions, files=file_lists, index_name=index_names, yanked=st.sampled_from([False, True, "yes", None]))
def test_hostile_index_entries_never_escape_or_crash(
    tmp_path: Path, decoy: Path, monkeypatch: pytest.MonkeyPatch, signer: tuple[Path, Path],
    commit: str, version: str, files: dict[str, Any], index_name: str, yanked: Any,
) -> None:
    from patchkit.registry import pull
    from patchkit.registry import versions as list_versions
    from patchkit.trust.store import trust_add

    key, public = signer
    home = tmp_path / f"example-{next(_counter)}"
    home.mkdir()
    monkeypatch.setenv("PATCHKIT_HOME", str(home))
    trust_add(public, ["acme/*"])
    root = home / "registry-disk"
    fmt = {"decoy": str(decoy)}
    entry = {"commit": commit.replace("{decoy}", fmt["decoy"]), "digest": "sha256:" + "0" * 64,
             "published_at": "2026-01-01T00:00:00Z", "files": files, "yanked": yanked, "yank_reason": None}
    body = {"schema": "patchkit-index/1", "name": index_name.replace("{decoy}", fmt["decoy"]), "index_version": 1,
            "expires": "2999-01-01T00:00:00Z", "updated_at": "", "versions": {version: entry}}
    _publish_raw_index(root, key, body)
    outside_before = sorted(p.name for p in tmp_path.iterdir() if p != home)
    decoy_before = snapshot(decoy)
    for call in (lambda: pull("acme/x", registry=f"file://{root}"),
                 lambda: pull(f"acme/x@{version}", registry=f"file://{root}"),
                 lambda: list_versions("acme/x", registry=f"file://{root}")):
        try:
            call()
        except PatchkitError:
            pass  # a refusal with an exit code is fine; anything else fails the test (exit 1, a bug)
    assert snapshot(decoy) == decoy_before
    assert sorted(p.name for p in tmp_path.iterdir() if p != home) == outside_before
