"""Issue 22, item 12: `trust add` for names another key is already trusted for warns, naming that key
and how to remove it; the "not in the trust store" error does not talk a user into trusting whoever
signed when another key is trusted for the name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.helpers import make_signed_patch, pk


def _key(tmp: Path, label: str) -> Path:
    assert pk("keys", "generate", "--out", tmp / label).returncode == 0
    return tmp / label / "public.pem"


def test_trust_add_for_names_another_key_owns_warns_naming_it(tmp_path: Path, pk_home: Path) -> None:
    a, b, c = _key(tmp_path, "a"), _key(tmp_path, "b"), _key(tmp_path, "c")
    r = pk("trust", "add", a, "--scope", "acme/*", "--name", "acme")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    r = pk("trust", "add", b, "--scope", "acme/tox", "--name", "someone")
    assert r.returncode == 0, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("warning: acme/tox overlaps acme/*, which this trust store already trusts to key acme (")
    assert "`patchkit trust remove acme`" in line, line
    assert "trusted someone" in r.stdout  # it was added: two keys for one namespace is legitimate during a rotation
    r = pk("trust", "add", c, "--scope", "beta/*", "--name", "beta", "--json")
    assert r.returncode == 0 and r.stderr == "" and json.loads(r.stdout)["warnings"] == []
    r = pk("trust", "add", c, "--scope", "acme/*", "--json")  # widening an existing entry into acme/*
    assert r.returncode == 0
    warnings = json.loads(r.stdout)["warnings"]
    assert len(warnings) == 2 and any("key acme (" in w for w in warnings) and any("key someone (" in w for w in warnings)
    assert r.stderr.strip().splitlines() == warnings


def test_unknown_signer_where_another_key_owns_the_name_is_not_told_to_trust_it(tmp_path: Path, pk_home: Path) -> None:
    art, _keys = make_signed_patch(tmp_path)  # acme/tox, its key trusted for acme/* (label: none)
    assert pk("trust", "add", _keys / "public.pem", "--scope", "acme/*", "--name", "acme-vendor").returncode == 0
    copy = tmp_path / "copy"
    shutil.copytree(art, copy)
    mallory = _key(tmp_path, "mallory")
    assert pk("sign", copy, "--key", mallory.with_name("private.pem")).returncode == 0
    r = pk("verify", copy)
    assert r.returncode == 4, r.stderr
    assert "not the key trusted for acme/tox, which is key acme-vendor (" in r.stderr and "scope acme/*" in r.stderr, r.stderr
    assert "trust add" not in r.stderr and "patchkit trust list" in r.stderr, r.stderr
    rj = json.loads(pk("verify", copy, "--json").stdout)
    assert "trust add" not in rj["hint"] and "ask the publisher" in rj["hint"]


def test_unknown_signer_for_names_nobody_owns_still_suggests_trust_add(tmp_path: Path, pk_home: Path) -> None:
    art, _keys = make_signed_patch(tmp_path, trust=False)
    r = pk("verify", art)
    assert r.returncode == 4 and "not in the trust store" in r.stderr and "patchkit trust add PUBLIC_PEM" in r.stderr, r.stderr
