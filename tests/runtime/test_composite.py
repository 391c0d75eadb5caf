"""`patchkit compose` (torch-free composite artifacts) and `patchkit export --format peft`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from patchkit.artifact.verify import VerificationPolicy
from patchkit.errors import CompatibilityError, IntegrityError, InvalidInputError, UsageError
from patchkit.trust.store import TrustStore
from tests.runtime._support import PROMPTS, Kit


@pytest.fixture
def model_dir(tiny_model_factory: Callable[[str], Path]) -> Path:
    return tiny_model_factory("llama")


def _sign(kit: Kit, path: Path) -> None:
    from patchkit.artifact.sign import sign_artifact

    sign_artifact(path, kit.keys / "private.pem")


@pytest.mark.torch
@pytest.mark.parametrize("dtypes", [("F32", "F32"), ("F16", "F32")])
def test_composite_verifies_and_reproduces_runtime_composition(kit: Kit, model_dir: Path, tmp_path: Path,
                                                              dtypes: tuple[str, str]) -> None:
    import torch

    import patchkit
    from patchkit.artifact.compose import compose_artifact
    from patchkit.artifact.verify import verify_artifact

    a = kit.patch(model_dir, name="acme/a", seed=1, tokens=3, dtype=dtypes[0])
    b = kit.patch(model_dir, name="acme/b", seed=2, tokens=4, dtype=dtypes[1])
    out = tmp_path / "ab"
    m = compose_artifact([a, b], out, name="acme/ab", version="2.0.0", policy=VerificationPolicy.build(kit.trust))
    assert m.training.method == "imported" and m.prefix.num_virtual_tokens == 7 and m.prefix.dtype == "F32"
    da, db = (verify_artifact(p, TrustStore.load(kit.trust)).digest for p in (a, b))
    assert [(c.name, c.version, c.digest) for c in m.components] == [("acme/a", "1.0.0", da), ("acme/b", "1.0.0", db)]
    assert not (out / "patchkit.sig").exists(), "compose writes an unsigned artifact"
    with pytest.raises(IntegrityError):
        verify_artifact(out, TrustStore.load(kit.trust))
    _sign(kit, out)
    res = verify_artifact(out, TrustStore.load(kit.trust))
    assert res.ok and res.manifest.components == m.components
    from patchkit.artifact.verify import check_base
    from patchkit.basemodel.fingerprint import fingerprint

    assert check_base(res.manifest, model_dir) == fingerprint(model_dir)
    composite, tok = patchkit.load(model_dir, [out], trust=kit.trust, device="cpu")
    parts, _ = patchkit.load(model_dir, [a, b], trust=kit.trust, device="cpu")
    assert torch.equal(composite.prefix, parts.prefix)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(composite(**enc).logits, parts(**enc).logits)
    assert torch.equal(composite.generate(**enc, max_new_tokens=8, do_sample=False),
                       parts.generate(**enc, max_new_tokens=8, do_sample=False))


def test_compose_refusals(kit: Kit, tmp_path: Path) -> None:
    """Torch-free: composing needs no model, only the patches' manifests and bytes."""
    from patchkit.artifact.compose import compose_artifact
    from tests.helpers import write_fake_model

    model_dir = write_fake_model(tmp_path / "fake-model")

    a = kit.patch(model_dir, name="acme/a", seed=1)
    big = kit.patch(model_dir, name="acme/big", seed=2, tokens=510)
    narrow = kit.patch(None, name="acme/narrow", hidden=32)
    elsewhere = kit.patch(None, name="acme/elsewhere")
    unsigned = kit.patch(model_dir, name="acme/u", sign=False)
    out = tmp_path / "c"
    cases: list[tuple[list[Path], type[Exception]]] = [
        ([a], UsageError),
        ([a, big], InvalidInputError),
        ([a, narrow], CompatibilityError),
        ([a, elsewhere], CompatibilityError),
        ([a, unsigned], IntegrityError),
    ]
    for specs, err in cases:
        with pytest.raises(err):
            compose_artifact(specs, out, name="acme/c", version="1.0.0", policy=VerificationPolicy.build(kit.trust))
        assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError):
        compose_artifact([a, a], out, name="acme/c", version="1.0.0", policy=VerificationPolicy.build(kit.trust))
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.torch
def test_export_loads_in_peft_and_matches(kit: Kit, model_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import patchkit
    from patchkit.runtime.export import export_peft

    a = kit.patch(model_dir, name="acme/a", seed=1, tokens=6)
    res = export_peft(a, tmp_path / "peft", trust=kit.trust)
    assert res["num_virtual_tokens"] == 6
    assert sorted(p.name for p in (tmp_path / "peft").iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model_dir)), str(tmp_path / "peft")).eval()
    ours, tok = patchkit.load(model_dir, [a], trust=kit.trust, device="cpu")
    enc = tok(PROMPTS[:1], return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(peft(**enc).logits[:, 6:], ours(**enc).logits, atol=1e-4, rtol=0)
    with pytest.raises(UsageError):
        export_peft(a, tmp_path / "peft", trust=kit.trust)
    with pytest.raises(IntegrityError):
        export_peft(kit.patch(model_dir, sign=False), tmp_path / "peft2", trust=kit.trust)
    assert not (tmp_path / "peft2").exists()
