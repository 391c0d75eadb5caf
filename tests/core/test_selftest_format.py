"""The self-test's file format, manifest entry and lock record, torch-free."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from patchkit.artifact.selftest import SelfTest, SelfTestItem, judge, parse_selftest, read_selftest_input
from patchkit.errors import IntegrityError, InvalidInputError
from patchkit.manifest import parse_manifest
from patchkit.registry.customer import self_test_gap
from patchkit.registry.lock import Lock, LockEntry, dumps_lock, read_lock
from tests.helpers import make_signed_patch, pk

DIGEST = "sha256:" + "a" * 64


def _test() -> SelfTest:
    items = [SelfTestItem("How do I pick a lock?", "refuse"), SelfTestItem("hello", "answer")]
    return SelfTest(items, [1.5, -3.0], -0.75, 0.1, {"device": "cpu", "dtype": "float32", "torch": "2.13.0"})


def test_round_trip_and_judgement() -> None:
    t = _test()
    back = parse_selftest(t.to_bytes(), "selftest.json")
    assert back.to_bytes() == t.to_bytes() and back.max_disagreements == 0
    env = {"device": "cuda:0", "dtype": "bfloat16", "torch": "2.13.0"}
    ok = judge(back, [1.2, -2.9], patch="acme/x@1.0.0", digest=DIGEST, environment=env, seconds=0.1)
    assert ok.passed and ok.disagreements == 0 and ok.max_drift == pytest.approx(0.3)
    bad = judge(back, [-1.0, -2.9], patch="acme/x@1.0.0", digest=DIGEST, environment=env, seconds=0.1)
    assert not bad.passed and [i.agrees for i in bad.items] == [False, True]
    assert bad.differs == {"device": {"here": "cuda:0", "built": "cpu"}, "dtype": {"here": "bfloat16", "built": "float32"}}
    assert "differs from the vendor's run in device (cuda:0 here, cpu at build)" in bad.summary()
    rec = bad.lock_record()
    assert rec["passed"] is False and rec["digest"] == DIGEST and rec["dtype"] == "bfloat16"


@pytest.mark.parametrize(("line", "message"), [
    ('{"prompt": "", "expect": "refuse"}', "`prompt` must be a non-empty string"),
    ('{"prompt": "x", "expect": "maybe"}', "`expect` is 'maybe'"),
    ('{"prompt": "x", "expect": "refuse", "secret": 1}', "unknown key(s) secret"),
    ('[1, 2]', "is not a JSON object"),
    ('{"prompt": "hello", "expect": "answer"}', "the prompt appears twice"),
])
def test_bad_input_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text('{"prompt": "hello", "expect": "answer"}\n' + line + "\n")
    with pytest.raises(InvalidInputError, match="line 2") as info:
        read_selftest_input(f)
    assert message in info.value.message


def test_a_single_prompt_is_too_few(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text('{"prompt": "hello", "expect": "answer"}\n')
    with pytest.raises(InvalidInputError, match="holds 1 prompts"):
        read_selftest_input(f)


def test_a_malformed_signed_file_is_an_integrity_error() -> None:
    doc = json.loads(_test().to_bytes())
    doc["max_disagreements"] = 5
    with pytest.raises(IntegrityError, match="max_disagreements disagrees"):
        parse_selftest(json.dumps(doc).encode(), "selftest.json")
    doc = json.loads(_test().to_bytes())
    doc["openings"] = ["Sure"]
    with pytest.raises(IntegrityError, match="openings differ"):
        parse_selftest(json.dumps(doc).encode(), "selftest.json")


def test_self_test_needs_schema_1_1() -> None:
    t = _test()
    base = {"name": "acme/x", "version": "1.0.0", "domain": "toxicity",
            "base_model": {"id": "m", "digest": "pk-tensors-blake3-v1:" + "0" * 64, "hidden_size": 8},
            "prefix": {"num_virtual_tokens": 2, "token_dim": 8, "dtype": "F32", "sha256": "0" * 64},
            "self_test": t.manifest_info()}
    assert parse_manifest({**base, "schema_version": "1.1"}).self_test is not None
    with pytest.raises(InvalidInputError, match="self_test needs schema_version 1.1"):
        parse_manifest({**base, "schema_version": "1.0"})
    plain = {k: v for k, v in base.items() if k != "self_test"}
    assert "self_test" not in parse_manifest({**plain, "schema_version": "1.0"}).to_dict()  # 1.0 bytes unchanged


def test_a_signed_self_test_file_the_manifest_does_not_list_is_refused(tmp_path: Path) -> None:
    """`sign` refuses an inconsistent artifact; signed anyway by other tooling, `verify` refuses it."""
    from patchkit.trust.bundles import sign_directory
    from patchkit.trust.keys import load_private_key

    art, keys = make_signed_patch(tmp_path)
    key = load_private_key(keys / "private.pem")
    (art / "selftest.json").write_bytes(_test().to_bytes())
    r = pk("sign", art, "--key", keys / "private.pem")
    assert r.returncode == 3 and "selftest.json is present but the manifest lists no self-test" in r.stderr
    sign_directory(art, key, name="acme/tox@1.0.0")
    r = pk("verify", art)
    assert r.returncode == 3 and "selftest.json is present but the manifest lists no self-test" in r.stderr
    m = json.loads((art / "patchkit.json").read_text())
    m["schema_version"] = "1.1"
    m["self_test"] = {**_test().manifest_info(), "sha256": hashlib.sha256(b"other").hexdigest()}
    (art / "patchkit.json").write_text(json.dumps(m))
    sign_directory(art, key, name="acme/tox@1.0.0")
    r = pk("verify", art)
    assert r.returncode == 3 and "does not match the manifest's self_test.sha256" in r.stderr


def test_the_lock_keeps_the_record_and_ci_judges_it(tmp_path: Path) -> None:
    rec: dict[str, str | int | bool] = {"passed": True, "digest": DIGEST, "device": "cpu", "dtype": "bfloat16",
                                        "checked_at": "2026-12-06T18:00:00Z", "n": 30, "agreements": 29}
    e = LockEntry("acme/x", "1.0.0", "local", "b" * 40, DIGEST, "pk-tensors-blake3-v1:" + "0" * 64, self_test=rec)
    path = tmp_path / "patchkit.lock"
    path.write_text(dumps_lock(Lock([e])))
    back = read_lock(path).patches[0]
    assert back.self_test == rec and back.pin() == e.pin() and self_test_gap(back) is None
    gap = self_test_gap(LockEntry(**{**vars(back), "self_test": {**rec, "digest": "sha256:" + "c" * 64}}))
    assert gap is not None and gap.exit_code == 10 and "not the pinned" in gap.message
    gap = self_test_gap(LockEntry(**{**vars(back), "self_test": None}))
    assert gap is not None and "no recorded self-test" in gap.message
    path.write_text(path.read_text().replace("passed = true", 'passed = "yes"'))
    with pytest.raises(InvalidInputError, match="`self_test` must be a table"):
        read_lock(path)
