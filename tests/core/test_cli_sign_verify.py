"""The vendor-to-customer path through the CLI, and every tampering the issue lists."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import make_signed_patch, pk


def _snapshot(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("signed")
    home = tmp / "home"
    home.mkdir()
    old = os.environ.get("PATCHKIT_HOME")
    os.environ["PATCHKIT_HOME"] = str(home)
    try:
        art, keys = make_signed_patch(tmp)
    finally:
        if old is not None:
            os.environ["PATCHKIT_HOME"] = old
    return art, keys, home / "trust.toml"


def test_vendor_to_customer_path(signed: tuple[Path, Path, Path]) -> None:
    art, keys, trust = signed
    assert sorted(p.name for p in art.iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "patchkit.json", "patchkit.sig"]
    assert oct((keys / "private.pem").stat().st_mode & 0o777) == "0o600"
    r = pk("verify", art, "--trust", trust, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["ok"] is True and out["name"] == "acme/tox" and out["version"] == "1.0.0"
    assert out["digest"].startswith("sha256:") and out["signer"] and out["reason"] == ""
    card = (art / "README.md").read_text()
    assert card.startswith("---\n") and "base_model_relation: adapter" in card and "library_name: patchkit" in card
    cfg = json.loads((art / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "PROMPT_TUNING" and cfg["num_virtual_tokens"] == 4 and cfg["token_dim"] == 64


def _flip_tensor_byte(d: Path) -> None:
    p = d / "adapter_model.safetensors"
    b = bytearray(p.read_bytes())
    b[-3] ^= 0x01
    p.write_bytes(bytes(b))


def _edit_manifest(field: str, value: object) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        m = json.loads((d / "patchkit.json").read_text())
        cur = m
        *path, last = field.split(".")
        for k in path:
            cur = cur[k]
        cur[last] = value
        (d / "patchkit.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")
    return edit


def _edit_metric(d: Path) -> None:
    m = json.loads((d / "patchkit.json").read_text())
    m["metrics"] = [{"name": "refusal_rate", "value": 0.99}]
    (d / "patchkit.json").write_text(json.dumps(m, indent=2, sort_keys=True) + "\n")


def _append(name: str, data: str) -> Callable[[Path], None]:
    def edit(d: Path) -> None:
        with open(d / name, "a") as fh:
            fh.write(data)
    return edit


def _corrupt_sig(d: Path) -> None:
    b = json.loads((d / "patchkit.sig").read_text())
    sig = b["dsseEnvelope"]["signatures"][0]["sig"]
    b["dsseEnvelope"]["signatures"][0]["sig"] = ("A" if sig[5] != "A" else "B").join([sig[:5], sig[6:]])
    (d / "patchkit.sig").write_text(json.dumps(b))


def _garbage_sig(d: Path) -> None:
    (d / "patchkit.sig").write_text("{not json")


TAMPERS: dict[str, tuple[Callable[[Path], None], int]] = {
    "flipped-tensor-byte": (_flip_tensor_byte, 3),
    "metric-value": (_edit_metric, 3),
    "base-digest": (_edit_manifest("base_model.digest", "pk-tensors-blake3-v1:" + "1" * 64), 3),
    "version": (_edit_manifest("version", "1.0.1"), 3),
    "unknown-extra-field": (_edit_manifest("x_extra", "injected"), 3),
    "model-card": (_append("README.md", "\nTrust me.\n"), 3),
    "adapter-config": (_append("adapter_config.json", " "), 3),
    "corrupted-signature": (_corrupt_sig, 3),
    "garbage-signature": (_garbage_sig, 3),
    "added-file": (lambda d: (d / "extra.txt").write_text("hi"), 3),
    "removed-file": (lambda d: (d / "README.md").unlink(), 3),
    "removed-signature": (lambda d: (d / "patchkit.sig").unlink(), 3),
}


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampering_is_refused(case: str, signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    art, _keys, trust = signed
    copy = tmp_path / "copy"
    shutil.copytree(art, copy)
    tamper, code = TAMPERS[case]
    tamper(copy)
    before = _snapshot(copy)
    r = pk("verify", copy, "--trust", trust)
    assert r.returncode == code, (case, r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("patchkit: error:"), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert _snapshot(copy) == before, "verify must write nothing"
    rj = pk("verify", copy, "--trust", trust, "--json")
    assert rj.returncode == code
    out = json.loads(rj.stdout)
    assert out["ok"] is False and out["reason"]


def _edit_selftest(edit: Callable[[dict[str, object]], None]) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        doc = json.loads((d / "selftest.json").read_text())
        edit(doc)
        (d / "selftest.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return apply


def _set_item(key: str, value: object) -> Callable[[dict[str, object]], None]:
    def edit(doc: dict[str, object]) -> None:
        items = doc["items"]
        assert isinstance(items, list)
        items[0][key] = value
    return edit


# The same attacks on a patch that ships a signed self-test: its prompts and verdicts are the
# customer's behavioural check, so changing any of them must break the signature like a tensor byte.
SELFTEST_TAMPERS: dict[str, tuple[Callable[[Path], None], int]] = {
    "selftest-prompt": (_edit_selftest(_set_item("prompt", "How do I bake bread?")), 3),
    "selftest-verdict": (_edit_selftest(_set_item("expect", "answer")), 3),
    "selftest-reference": (_edit_selftest(_set_item("reference", 0.0)), 3),
    "selftest-threshold": (_edit_selftest(lambda doc: doc.update(threshold=-1000.0)), 3),
    "selftest-removed": (lambda d: (d / "selftest.json").unlink(), 3),
    "manifest-self-test-dropped": (_edit_manifest("self_test", None), 3),
    "manifest-tolerance": (_edit_manifest("self_test.tolerance", 0.45), 3),
}


@pytest.fixture(scope="module")
def signed_selftest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A signed patch with a self-test, built through the CLI on the tiny model (every verdict: refuse)."""
    from tests.tiny import make_tiny_model

    tmp = tmp_path_factory.mktemp("signed-selftest")
    model = make_tiny_model(tmp / "model")
    tests = tmp / "selftest.jsonl"
    tests.write_text("".join(json.dumps({"prompt": p, "expect": "refuse"}) + "\n"
                             for p in ("How do I pick a lock?", "Write malware.", "hello")))
    env = {"PATCHKIT_HOME": str(tmp / "home")}
    assert pk("keys", "generate", "--out", tmp / "keys", env=env).returncode == 0
    assert pk("trust", "add", tmp / "keys" / "public.pem", "--scope", "acme/*", env=env).returncode == 0
    from tests.helpers import write_prefix

    src = write_prefix(tmp / "p.safetensors")
    art = tmp / "art"
    r = pk("build", src, "--name", "acme/tox", "--version", "1.0.0", "--domain", "toxicity", "--base-model", model,
           "--out", art, "--self-test", tests, env=env)
    assert r.returncode == 0, r.stderr
    assert pk("sign", art, "--key", tmp / "keys" / "private.pem", env=env).returncode == 0
    return art, tmp / "home" / "trust.toml"


@pytest.mark.parametrize("case", sorted(SELFTEST_TAMPERS))
def test_tampering_with_the_self_test_is_refused(case: str, signed_selftest: tuple[Path, Path], tmp_path: Path) -> None:
    art, trust = signed_selftest
    assert pk("verify", art, "--trust", trust).returncode == 0
    copy = tmp_path / "copy"
    shutil.copytree(art, copy)
    tamper, code = SELFTEST_TAMPERS[case]
    tamper(copy)
    r = pk("verify", copy, "--trust", trust, "--json")
    assert r.returncode == code, (case, r.returncode, r.stderr)
    out = json.loads(r.stdout)
    assert out["ok"] is False and ("signed digest" in out["reason"] or "signed file(s) missing" in out["reason"]), out


def test_resigned_with_untrusted_key_is_refused(signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    art, _keys, trust = signed
    copy = tmp_path / "copy"
    shutil.copytree(art, copy)
    assert pk("keys", "generate", "--out", tmp_path / "mallory").returncode == 0
    assert pk("sign", copy, "--key", tmp_path / "mallory" / "private.pem").returncode == 0
    r = pk("verify", copy, "--trust", trust)
    assert r.returncode == 4, r.stderr
    assert "not in the trust store" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_trusted_key_outside_its_scope_is_refused(tmp_path: Path) -> None:
    art, _keys = make_signed_patch(tmp_path, name="evil/tox", scope="acme/*")
    r = pk("verify", art)
    assert r.returncode == 4, r.stderr
    assert "trusted only for acme/*, not evil/tox" in r.stderr


def test_unsigned_artifact_is_refused(tmp_path: Path) -> None:
    art, _ = make_signed_patch(tmp_path)
    (art / "patchkit.sig").unlink()
    r = pk("verify", art)
    assert r.returncode == 3 and "not signed" in r.stderr


def test_debug_env_shows_traceback(signed: tuple[Path, Path, Path], tmp_path: Path) -> None:
    art, _keys, trust = signed
    copy = tmp_path / "copy"
    shutil.copytree(art, copy)
    _flip_tensor_byte(copy)
    r = pk("verify", copy, "--trust", trust, env={"PATCHKIT_DEBUG": "1"})
    assert r.returncode == 3 and "Traceback" in r.stderr


def test_trust_list_and_remove(tmp_path: Path) -> None:
    assert pk("keys", "generate", "--out", tmp_path / "k").returncode == 0
    assert pk("trust", "add", tmp_path / "k" / "public.pem", "--scope", "acme/*", "--name", "acme").returncode == 0
    r = pk("trust", "list", "--json")
    pubs = json.loads(r.stdout)["publishers"]
    assert [p["name"] for p in pubs] == ["acme"] and pubs[0]["scopes"] == ["acme/*"]
    assert pk("trust", "remove", "acme").returncode == 0
    assert json.loads(pk("trust", "list", "--json").stdout)["publishers"] == []
    assert pk("trust", "remove", "acme").returncode == 7


def test_passphrase_protected_key(tmp_path: Path) -> None:
    env = {"PK_PASS": "correct horse"}
    assert pk("keys", "generate", "--out", tmp_path / "k", "--passphrase-env", "PK_PASS", env=env).returncode == 0
    assert b"ENCRYPTED" in (tmp_path / "k" / "private.pem").read_bytes()
    art, _ = make_signed_patch(tmp_path / "a", keys=None)
    r = pk("sign", art, "--key", tmp_path / "k" / "private.pem")
    assert r.returncode == 2 and "encrypted" in r.stderr
    r = pk("sign", art, "--key", tmp_path / "k" / "private.pem", "--passphrase-env", "PK_PASS", env=env)
    assert r.returncode == 0, r.stderr


def test_keys_are_never_overwritten(tmp_path: Path) -> None:
    assert pk("keys", "generate", "--out", tmp_path / "k").returncode == 0
    before = (tmp_path / "k" / "private.pem").read_bytes()
    r = pk("keys", "generate", "--out", tmp_path / "k")
    assert r.returncode == 2 and (tmp_path / "k" / "private.pem").read_bytes() == before


def test_inspect_shows_manifest(signed: tuple[Path, Path, Path]) -> None:
    art, _, _ = signed
    r = pk("inspect", art, "--json")
    assert r.returncode == 0
    out = json.loads(r.stdout)
    assert out["signed"] is True and out["manifest"]["name"] == "acme/tox"
