"""load(): order, the lock, and every refusal (with its error class) before weights load."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from patchkit.artifact.verify import VerificationPolicy
from patchkit.errors import CompatibilityError, IntegrityError, InvalidInputError, NotFoundError, TrustError
from tests.helpers import ZERO_DIGEST, tampered_copy
from tests.runtime._support import PROMPTS, Kit

pytestmark = pytest.mark.torch  # patchkit.load lives in the torch half of the runtime


@pytest.fixture
def model_dir(tiny_model_factory: Callable[[str], Path]) -> Path:
    return tiny_model_factory("llama")


@pytest.fixture
def no_weights(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if the model's weights (or tokenizer) start loading."""
    import patchkit.runtime.loader as loader

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("model weights were loaded before the refusal")

    monkeypatch.setattr(loader, "build_patched", boom)
    yield


def _load(model_dir: Path, patches: list[Path], kit: Kit, **kw: object) -> object:
    import patchkit

    return patchkit.load(model_dir, patches, trust=kit.trust, device="cpu", **kw)


# -- order -------------------------------------------------------------------------------------


def test_order_matters(kit: Kit, model_dir: Path) -> None:
    import torch

    import patchkit

    a = kit.patch(model_dir, name="acme/a", seed=1, tokens=3)
    b = kit.patch(model_dir, name="acme/b", seed=2, tokens=5)
    ab, tok = patchkit.load(model_dir, [a, b], trust=kit.trust, device="cpu")
    ba, _ = patchkit.load(model_dir, [b, a], trust=kit.trust, device="cpu")
    only_a, _ = patchkit.load(model_dir, [a], trust=kit.trust, device="cpu")
    only_b, _ = patchkit.load(model_dir, [b], trust=kit.trust, device="cpu")
    assert ab.patch_ids == ["acme/a@1.0.0", "acme/b@1.0.0"]
    assert ba.patch_ids == ["acme/b@1.0.0", "acme/a@1.0.0"]
    assert ab.num_virtual_tokens == 8
    assert torch.equal(ab.prefix, torch.cat([only_a.prefix, only_b.prefix]))
    assert torch.equal(ba.prefix, torch.cat([only_b.prefix, only_a.prefix]))
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        diff = (ab(**enc).logits[:, -1] - ba(**enc).logits[:, -1]).abs().max().item()
    assert diff > 1e-3, "A+B and B+A must not be the same model"


# -- the lock ----------------------------------------------------------------------------------


def _publish_and_apply(kit: Kit, model: Path, patches: list[Path], refs: list[str]) -> None:
    from patchkit.registry import apply, publish

    for p in patches:
        publish(p, kit.keys / "private.pem")
    apply(refs, model, VerificationPolicy.build(kit.trust))


def test_patches_none_applies_the_lock_in_order(kit: Kit, tiny_model: Path) -> None:
    import patchkit

    a = kit.patch(tiny_model, name="acme/a", seed=1)
    b = kit.patch(tiny_model, name="acme/b", seed=2)
    model, _ = patchkit.load(tiny_model, None, trust=kit.trust, device="cpu")
    assert model.patch_ids == []  # no lock yet: the plain model
    _publish_and_apply(kit, tiny_model, [a, b], ["acme/b@1.0.0", "acme/a@^1"])
    model, _ = patchkit.load(tiny_model, trust=kit.trust, device="cpu")
    assert model.patch_ids == ["acme/b@1.0.0", "acme/a@1.0.0"]
    assert all(p.verified and p.digest.startswith("sha256:") for p in model.patches)
    model, _ = patchkit.load(tiny_model, [], trust=kit.trust, device="cpu")
    assert model.patch_ids == []
    model, _ = patchkit.load(tiny_model, ["acme/a@1"], trust=kit.trust, device="cpu")
    assert model.patch_ids == ["acme/a@1.0.0"]


def test_lock_digest_mismatch_is_refused(kit: Kit, tiny_model: Path, no_weights: None) -> None:
    import patchkit

    a = kit.patch(tiny_model, name="acme/a", seed=1)
    _publish_and_apply(kit, tiny_model, [a], ["acme/a@1.0.0"])
    lock = tiny_model / "patchkit.lock"
    text = lock.read_text()
    digest = text.split('digest = "')[1].split('"')[0]
    lock.write_text(text.replace(digest, "sha256:" + "1" * 64))
    with pytest.raises(IntegrityError):
        patchkit.load(tiny_model, trust=kit.trust, device="cpu")


# -- refusals ----------------------------------------------------------------------------------


def test_hidden_size_mismatch(kit: Kit, model_dir: Path, no_weights: None) -> None:
    from patchkit.basemodel.fingerprint import fingerprint

    p = kit.patch(None, hidden=32, base_digest=fingerprint(model_dir))
    with pytest.raises(CompatibilityError, match="hidden size 64"):
        _load(model_dir, [p], kit)


def test_wrong_base_refused_then_allowed_loudly(kit: Kit, model_dir: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    p = kit.patch(None, base_digest=ZERO_DIGEST)
    import patchkit.runtime.loader as loader

    called: list[bool] = []
    monkeypatch.setattr(loader, "build_patched", lambda *a, **k: called.append(True))
    with pytest.raises(CompatibilityError, match="was built for base") as info:
        _load(model_dir, [p], kit)
    assert "--allow-base-mismatch" in (info.value.hint or "")
    assert not called
    with pytest.warns(UserWarning, match="allow_base_mismatch"):
        _load(model_dir, [p], kit, allow_base_mismatch=True)
    assert called
    assert "WARNING" in capsys.readouterr().err


def test_unsigned_refused_and_verify_false_warns(kit: Kit, model_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    p = kit.patch(model_dir, sign=False)
    import patchkit.runtime.loader as loader

    called: list[bool] = []
    monkeypatch.setattr(loader, "build_patched", lambda *a, **k: called.append(True))
    with pytest.raises(IntegrityError, match="not signed"):
        _load(model_dir, [p], kit)
    assert not called
    with pytest.warns(UserWarning, match="WITHOUT signature"):
        _load(model_dir, [p], kit, verify=False)
    assert called and "verification is OFF" in capsys.readouterr().err


def test_untrusted_and_out_of_scope_refused(kit: Kit, model_dir: Path, no_weights: None) -> None:
    stranger = kit.patch(model_dir, key=kit.other_keys)
    with pytest.raises(TrustError):
        _load(model_dir, [stranger], kit)
    foreign = kit.patch(model_dir, name="other/tox")
    with pytest.raises(TrustError):
        _load(model_dir, [foreign], kit)


def test_tampered_tensor_refused(kit: Kit, model_dir: Path, no_weights: None, tmp_path: Path) -> None:
    p = kit.patch(model_dir)
    bad = tampered_copy(p, tmp_path / "bad", "adapter_model.safetensors")
    with pytest.raises(IntegrityError):
        _load(model_dir, [bad], kit)


def test_over_budget_refused(kit: Kit, model_dir: Path, no_weights: None) -> None:
    a = kit.patch(model_dir, name="acme/a", tokens=300, seed=1)
    b = kit.patch(model_dir, name="acme/b", tokens=300, seed=2)
    with pytest.raises(InvalidInputError, match="over the budget of 512"):
        _load(model_dir, [a, b], kit)
    with pytest.raises(InvalidInputError, match="budget of 299"):
        _load(model_dir, [a], kit, token_budget=299)


def test_patches_that_do_not_compose_are_refused(kit: Kit, model_dir: Path, no_weights: None) -> None:
    a = kit.patch(model_dir, name="acme/a")
    narrow = kit.patch(None, name="acme/narrow", hidden=32)
    with pytest.raises(CompatibilityError, match="token_dim"):
        _load(model_dir, [a, narrow], kit)
    other_base = kit.patch(None, name="acme/other")
    with pytest.raises(CompatibilityError, match="different base models"):
        _load(model_dir, [a, other_base], kit)


def test_missing_things(kit: Kit, model_dir: Path, tmp_path: Path, no_weights: None) -> None:
    with pytest.raises(NotFoundError):
        _load(model_dir, [tmp_path / "nope"], kit)
    with pytest.raises(NotFoundError):
        _load(tmp_path, [], kit)
