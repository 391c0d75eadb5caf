"""Attack: a patch that verifies but breaks the policy.toml beside the trust store is used anyway.

Before the fix only `verify`, `status` and `ci` read policy.toml; `apply`, `pull`, `generate`,
`chat`, `patchkit.load` and `serve` applied such a patch with exit 0. Now every path builds its
checks with the one constructor (`VerificationPolicy.load`), and each refuses with exit 9
(PolicyError) naming the rule, before any weights load, leaving the model directory, its lock
and the download cache byte for byte as they were.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from patchkit import constants
from patchkit.errors import PolicyError
from patchkit.registry.cache import cache_root, entry_dir
from patchkit.registry.lock import read_lock
from tests.helpers import pk
from tests.registry.conftest import Vendor, snapshot

RULE = "domain in {harmfulness}"
BROKEN = "acme/tox@1.0.0 does not meet the policy `domain in {harmfulness}`: domain is 'toxicity'"


@dataclass
class BelowPolicy:
    """acme/tox@1.0.0 (a toxicity patch, signed and trusted), published and applied to `model`; then the
    customer's policy.toml says only harmfulness patches may be used."""

    url: str
    model: Path
    artifact: Path
    lock: Path

    def state(self) -> tuple[Any, ...]:
        """What a refused command must leave exactly as it was: the model directory (with its lock) and the cache."""
        return snapshot(self.model), snapshot(cache_root())

    def uncache(self) -> None:
        """Drop the pinned copy from the cache (the cache itself stays), so the command must download it."""
        pin = read_lock(self.lock).patches[0]
        shutil.rmtree(entry_dir(pin.name, pin.commit))


@pytest.fixture
def below(vendor: Vendor, model_dir: Path, tmp_path: Path, pk_home: Path) -> BelowPolicy:
    url = f"file://{tmp_path / 'registry'}"
    vendor.publish("1.0.0", url, base_model=model_dir)
    assert pk("apply", "acme/tox@1.0.0", "--model", model_dir, "--registry", url).returncode == 0
    (pk_home / "policy.toml").write_text(f'require = ["{RULE}"]\n')
    return BelowPolicy(url, model_dir, vendor.made[-1], model_dir / constants.LOCK_FILE)


def _fresh_model(b: BelowPolicy) -> list[str]:
    """`apply` to a copy of the weights with no lock yet: nothing may appear in it."""
    fresh = b.model.parent / "fresh-model"
    shutil.copytree(b.model, fresh)
    (fresh / constants.LOCK_FILE).unlink()
    b.model = fresh
    return ["apply", "acme/tox@1.0.0", "--model", str(fresh), "--registry", b.url]


# name: (the command line, whether it may download the pin, stdin)
COMMANDS: dict[str, tuple[Callable[[BelowPolicy], list[str]], bool, str | None]] = {
    "verify": (lambda b: ["verify", "acme/tox@1.0.0", "--registry", b.url], True, None),
    "verify --lock": (lambda b: ["verify", "--lock", str(b.lock)], True, None),
    "status": (lambda b: ["status", "--model", str(b.model)], False, None),
    "apply": (_fresh_model, True, None),
    "apply --frozen": (lambda b: ["apply", "--frozen", "--model", str(b.model)], True, None),
    "pull": (lambda b: ["pull", "acme/tox@1.0.0", "--registry", b.url], True, None),
    "generate": (lambda b: ["generate", "--model", str(b.model), "hello"], True, None),
    "generate --patch REF": (lambda b: ["generate", "--model", str(b.model), "--no-lock", "--patch", "acme/tox@1.0.0",
                                        "--registry", b.url, "hello"], True, None),
    "generate --patch DIR": (lambda b: ["generate", "--model", str(b.model), "--no-lock", "--patch", str(b.artifact),
                                        "hello"], False, None),
    "chat": (lambda b: ["chat", "--model", str(b.model)], True, "hello\n"),
    "serve": (lambda b: ["serve", "--model", str(b.model), "--port", "0"], True, None),
}


# Every command with the pin in the cache; those that can download it, also with it not cached.
CASES = [(c, False) for c in COMMANDS] + [(c, True) for c, (_, downloads, _) in COMMANDS.items() if downloads]


@pytest.mark.parametrize(("command", "uncached"), CASES, ids=[f"{c}-{'uncached' if u else 'cached'}" for c, u in CASES])
def test_policy_toml_breaking_patch_is_refused_by_every_command(below: BelowPolicy, command: str, uncached: bool) -> None:
    argv, _, stdin = COMMANDS[command]
    if uncached:
        below.uncache()
    args = argv(below)
    before = below.state()
    r = pk(*args, input=stdin, timeout=180)
    assert r.returncode == 9, (command, r.returncode, r.stdout, r.stderr)
    said = " ".join((r.stdout + r.stderr).split())  # `verify --lock` wraps its report
    assert BROKEN in said, said
    assert below.state() == before, f"{command} changed the model directory, its lock or the cache"


def test_policy_toml_is_refused_by_patchkit_load_before_the_weights(below: BelowPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    import patchkit
    import patchkit.runtime.loader as loader

    def no_weights(*_: Any, **__: Any) -> Any:
        raise AssertionError("the weights were loaded for a patch the policy refuses")

    monkeypatch.setattr(loader, "load_model", no_weights)
    below.uncache()
    before = below.state()
    for patches in (None, ["acme/tox@1.0.0"], [below.artifact]):
        with pytest.raises(PolicyError) as info:
            patchkit.load(below.model, patches=patches, registry=below.url)
        assert info.value.exit_code == 9 and BROKEN in info.value.message
        assert below.state() == before


def test_policy_toml_is_refused_by_the_server_at_start_up_and_per_request(below: BelowPolicy) -> None:
    from patchkit.serve.app import ServerState
    from patchkit.serve.config import ServeConfig
    from patchkit.serve.metrics import Metrics
    from patchkit.serve.patches import PatchResolver
    from patchkit.trust.store import TrustStore
    from tests.serve.test_app import CHAT, ScriptedEngine, _run

    below.uncache()
    before = below.state()
    config = ServeConfig(name="tiny")
    resolver = PatchResolver(below.model, config, name="tiny", trust=TrustStore.load(), registry=below.url)
    with pytest.raises(PolicyError, match="domain in"):
        resolver.preload()  # the lock's patch: the server does not start
    state = ServerState(engine=ScriptedEngine(), resolver=resolver, config=config, metrics=Metrics(), name="tiny")
    for model in ("tiny", "tiny+acme/tox@1.0.0"):
        status, _, raw = _run(state, CHAT, {"model": model, "messages": [{"role": "user", "content": "hi"}]})
        # The client sees the stable code; the rule itself stays in the server log.
        assert status == 403 and b"patch_policy_refused" in raw, raw
    assert below.state() == before


def test_serve_refuses_before_torch_or_the_web_stack_loads(below: BelowPolicy) -> None:
    from tests.serve.test_cli import RUNNER

    r = subprocess.run([sys.executable, "-c", RUNNER, "serve", "--model", str(below.model), "--port", "0"],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 9 and BROKEN in r.stderr, r.stderr
    assert "HEAVY=\n" in r.stderr, r.stderr
