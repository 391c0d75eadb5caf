"""Finding 10 of issue 21: a mirror (no key, write access to the registry) plants a key log that costs
every client command minutes of CPU. The log is capped (statements, scopes, bytes; over a cap: exit 3
naming it), and judging it is linear: counted in signature checks and scope comparisons, not wall time."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.keylog import plant, planted_envelopes, planted_log
from patchkit.registry import pull
from patchkit.registry.backends import open_registry
from patchkit.registry.keylog import MAX_KEYLOG_BYTES, read_log
from patchkit.trust import statements as lifecycle
from patchkit.trust.statements import MAX_LOG_SCOPES, MAX_STATEMENTS, Envelope, dumps_log
from tests.helpers import pk
from tests.registry.conftest import Vendor
from tests.registry.lifecycle import state_of


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'reg'}"


def test_planted_key_log_at_the_caps_is_judged_and_the_pull_completes(vendor: Vendor, url: str, pk_home: Path) -> None:
    vendor.publish("1.0.0", url)
    data = planted_log(namespace="acme")
    assert len(data) <= MAX_KEYLOG_BYTES
    plant(url, data, "acme")
    r = pk("pull", "acme/tox@1", "--registry", url, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == "1.0.0"
    # the log was read and judged, not skipped: the mirror keys' self-revocations stand and are recorded
    revoked = json.loads((pk_home / "state" / "revocations.json").read_text())
    assert len(revoked["keys"]) == MAX_STATEMENTS - MAX_LOG_SCOPES // 64


@pytest.mark.parametrize("over", ["statements", "scopes", "bytes"])
def test_planted_key_log_over_a_cap_is_refused_naming_the_cap(vendor: Vendor, url: str, pk_home: Path, over: str) -> None:
    vendor.publish("1.0.0", url)
    if over == "statements":
        data, cap = planted_log(MAX_STATEMENTS + 1, 64, namespace="acme"), f"more than {MAX_STATEMENTS} key statements"
    elif over == "scopes":
        data, cap = planted_log(16, MAX_LOG_SCOPES + 1, namespace="acme"), f"over the cap of {MAX_LOG_SCOPES}"
    else:
        envs = planted_envelopes(8, 64, "acme")
        data = dumps_log("acme", envs)[:-1] + b" " * (MAX_KEYLOG_BYTES + 1 - len(data := dumps_log("acme", envs))) + b"}"
        assert len(data) == MAX_KEYLOG_BYTES + 1
        cap = f"larger than the cap of {MAX_KEYLOG_BYTES} bytes"
    plant(url, data, "acme")
    before = state_of(pk_home)
    r = pk("pull", "acme/tox@1", "--registry", url)
    assert r.returncode == 3, r.stderr
    assert cap in r.stderr, r.stderr
    assert state_of(pk_home) == before


def test_issue_planted_log_of_40_split_rotations_is_refused_over_the_scope_cap(vendor: Vendor, url: str,
                                                                               pk_home: Path) -> None:
    """The log the red team planted: 40 rotations of 64 disjoint names each (128 KB), 22 s to judge before."""
    vendor.publish("1.0.0", url)
    plant(url, planted_log(40, 40 * 64, namespace="acme"), "acme")
    r = pk("pull", "acme/tox@1", "--registry", url)
    assert r.returncode == 3 and f"2560 scopes, over the cap of {MAX_LOG_SCOPES}" in r.stderr, r.stderr


class _Counter:
    def __init__(self) -> None:
        self.signatures = 0
        self.matches = 0
        self.parses = 0
        self.judges = 0


def _count(monkeypatch: pytest.MonkeyPatch) -> _Counter:
    """Count signature checks, scope pattern matches, log parses and judgements in this process."""
    c = _Counter()
    signed_by, fnmatchcase = Envelope.signed_by, fnmatch.fnmatchcase
    parse_log, judge = lifecycle.parse_log, lifecycle.judge

    def count_sig(self: Envelope, ref: Any) -> bool:
        c.signatures += 1
        return signed_by(self, ref)

    def count_match(name: str, pat: str) -> bool:
        c.matches += 1
        return fnmatchcase(name, pat)

    def count_parse(*a: Any, **kw: Any) -> Any:
        c.parses += 1
        return parse_log(*a, **kw)

    def count_judge(*a: Any, **kw: Any) -> Any:
        c.judges += 1
        return judge(*a, **kw)

    monkeypatch.setattr(Envelope, "signed_by", count_sig)
    monkeypatch.setattr(lifecycle.fnmatch, "fnmatchcase", count_match)
    import patchkit.registry.keylog as keylog

    monkeypatch.setattr(keylog, "parse_log", count_parse)
    monkeypatch.setattr(keylog, "judge", count_judge)
    return c


def _pull_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vendor: Vendor, envs: list[Envelope], label: str) -> _Counter:
    url = f"file://{tmp_path / f'reg-{label}'}"
    vendor.publish("1.0.0", url)
    plant(url, dumps_log("acme", envs), "acme")
    home = tmp_path / f"home-{label}"
    home.mkdir()
    monkeypatch.setenv("PATCHKIT_HOME", str(home))
    from patchkit.trust.store import trust_add

    trust_add(vendor.public, ["acme/*"], label="acme")
    with monkeypatch.context() as m:
        c = _count(m)
        assert pull("acme/tox@1", registry=url).version == "1.0.0"
        read_log(open_registry(url), "acme")  # a second read in one process: judged once
    return c


@pytest.mark.slow
def test_planted_key_log_costs_linear_work(vendor: Vendor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Doubling the planted log (statements and scopes) doubles the work, no more; each statement's
    signatures are checked once, and the log is parsed and judged once per process."""
    half = _pull_counts(tmp_path, monkeypatch, vendor, planted_envelopes(MAX_STATEMENTS // 2, MAX_LOG_SCOPES // 2, "acme"), "half")
    full = _pull_counts(tmp_path, monkeypatch, vendor, planted_envelopes(MAX_STATEMENTS, MAX_LOG_SCOPES, "acme"), "full")
    rotations = MAX_LOG_SCOPES // 64
    assert full.signatures == 2 * rotations + (MAX_STATEMENTS - rotations)  # two per rotation, one per revocation
    assert half.signatures == 2 * (rotations // 2) + (MAX_STATEMENTS // 2 - rotations // 2)
    assert full.parses == full.judges == 1 and half.parses == half.judges == 1
    # the disjoint literal names are never compared pairwise (before: 2 matches per pair of names)
    assert full.matches <= 2 * max(half.matches, MAX_LOG_SCOPES), (half.matches, full.matches)
    assert full.matches < 4 * MAX_LOG_SCOPES, full.matches


def _index_with_history(entries: int) -> bytes:
    from patchkit.registry.index import Index

    idx = Index.empty("acme/tox")
    idx.index_version = entries + 1
    idx.expires = "2999-01-01T00:00:00Z"
    from patchkit.registry.index import HistoryEntry

    idx.history = [HistoryEntry(i, f"{i:064x}") for i in range(1, entries + 1)]
    return idx.to_bytes()


def test_planted_index_history_over_the_cap_is_refused_and_parsing_is_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    """The signed index's history, the other metadata a client reads in full: capped, and parsed in one pass."""
    from patchkit.errors import IntegrityError
    from patchkit.registry import index as index_mod

    monkeypatch.setattr(index_mod, "MAX_HISTORY_ENTRIES", 2000)
    with pytest.raises(IntegrityError, match="2001 entries, over the cap of 2000"):
        index_mod.parse_index(_index_with_history(2001), where="reg")
    calls = {"n": 0}
    real = index_mod.HistoryEntry

    def counted(*a: Any) -> Any:
        calls["n"] += 1
        return real(*a)

    monkeypatch.setattr(index_mod, "HistoryEntry", counted)
    for n in (1000, 2000):
        data = _index_with_history(n)
        calls["n"] = 0
        assert len(index_mod.parse_index(data, where="reg").history) == n
        assert calls["n"] == n  # one entry built per history entry, no re-parsing
