"""Gated patches: the gate's file and manifest entry, its routing at run time, and where it cannot go."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from patchkit.errors import CompatibilityError, IntegrityError, InvalidInputError, UsageError
from tests.helpers import pk, tampered_copy, write_prefix
from tests.runtime._support import PROMPTS, Kit, gated_source

pytestmark = pytest.mark.torch
NEW = 6


@pytest.fixture
def model_dir(tiny_model_factory: Callable[[str], Path]) -> Path:
    return tiny_model_factory("llama")


def _weight(seed: int = 3, hidden: int = 64) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(0.0, 1.0) for _ in range(hidden)]


def _logits(model_dir: Path, weight: list[float], bias: float, layer: int = 1) -> list[float]:
    """The probe logit of each of PROMPTS on the bare model, batched and left padded as the tests run them."""
    import torch

    from patchkit.lm.loading import load_model
    from patchkit.runtime.gate import prompt_states

    base, tok = load_model(model_dir)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    h = prompt_states(base, enc.input_ids, enc.attention_mask, [layer])[layer]
    return [float(v) for v in (h @ torch.tensor(weight) + bias)]


def _build(kit: Kit, src: Path, model_dir: Path, out: Path, name: str = "acme/gated") -> Path:
    from patchkit.artifact.build import build_artifact
    from patchkit.artifact.sign import sign_artifact

    build_artifact(src, out, name=name, version="1.0.0", domain="harmfulness", base_model=model_dir)
    sign_artifact(out, kit.keys / "private.pem")
    return out


def _split(model_dir: Path) -> tuple[list[float], float, list[bool]]:
    """A gate whose threshold sends two of the four prompts to the patch and two to the bare model."""
    weight = _weight()
    logits = _logits(model_dir, weight, 0.25)
    ordered = sorted(logits)
    threshold = (ordered[1] + ordered[2]) / 2
    return weight, threshold, [v > threshold for v in logits]


def test_a_gated_patch_routes_each_prompt_and_each_route_is_exact(kit: Kit, model_dir: Path, tmp_path: Path) -> None:
    """Routed rows get exactly the patch's output, the others exactly the bare model's, in one padded batch."""
    import torch

    import patchkit
    from patchkit.runtime.patched import PatchedModel

    weight, threshold, routed = _split(model_dir)
    assert routed.count(True) == 2
    art = _build(kit, gated_source(tmp_path / "src", weight=weight, bias=0.25, threshold=threshold), model_dir, tmp_path / "art")
    manifest = json.loads((art / "patchkit.json").read_text())
    assert manifest["schema_version"] == "1.3" and manifest["gate"]["layer"] == 1
    assert manifest["gate"]["threshold"] == threshold and manifest["gate"]["file"] == "gate.safetensors"
    model, tok = patchkit.load(model_dir, [art], trust=kit.trust)
    assert model.gated and model.patches[0].gate is not None
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    assert model.route(enc.input_ids, enc.attention_mask) == [(r,) for r in routed]
    out = model.generate(**enc, max_new_tokens=NEW, do_sample=False)
    ungated = PatchedModel(model.base, model.prefix.clone(), gates=())
    for i, prompt in enumerate(PROMPTS):
        one = tok([prompt], return_tensors="pt")
        want = (ungated if routed[i] else model.base).generate(**one, max_new_tokens=NEW, do_sample=False)[0]
        got = out[i][enc.input_ids.shape[1] - one.input_ids.shape[1]:]
        assert got[: len(want)].tolist() == want.tolist(), f"row {i} (routed={routed[i]})"
    with torch.no_grad():
        logits = model(**enc).logits
        assert torch.allclose(logits[[i for i, r in enumerate(routed) if r]],
                              ungated(**enc).logits[[i for i, r in enumerate(routed) if r]], atol=1e-5)
        assert torch.allclose(logits[[i for i, r in enumerate(routed) if not r]],
                              model.base(**enc).logits[[i for i, r in enumerate(routed) if not r]], atol=1e-5)


def test_a_gate_below_every_prompt_is_the_plain_patch_and_above_every_prompt_the_bare_model(kit: Kit, model_dir: Path,
                                                                                          tmp_path: Path) -> None:
    import patchkit

    weight = _weight()
    logits = _logits(model_dir, weight, 0.0)
    results = {}
    for name, threshold in (("all", min(logits) - 1), ("none", max(logits) + 1)):
        art = _build(kit, gated_source(tmp_path / f"src-{name}", weight=weight, bias=0.0, threshold=threshold),
                     model_dir, tmp_path / f"art-{name}", name=f"acme/gated-{name}")
        model, tok = patchkit.load(model_dir, [art], trust=kit.trust)
        enc = tok(PROMPTS, return_tensors="pt", padding=True)
        results[name] = (model, model.generate(**enc, max_new_tokens=NEW, do_sample=False), enc)
    model, out, enc = results["all"]
    from patchkit.runtime.patched import PatchedModel

    plain = PatchedModel(model.base, model.prefix.clone(), gates=())
    assert out.tolist() == plain.generate(**enc, max_new_tokens=NEW, do_sample=False).tolist()
    model, out, enc = results["none"]
    assert out.tolist() == model.base.generate(**enc, max_new_tokens=NEW, do_sample=False).tolist()


def test_composition_routes_each_gated_part_and_keeps_the_ungated_one(kit: Kit, model_dir: Path, tmp_path: Path) -> None:
    """A gated patch that routes nothing, composed after an ungated one: every row runs the ungated one alone."""
    import patchkit
    from patchkit.runtime.patched import PatchedModel

    weight = _weight()
    never = max(_logits(model_dir, weight, 0.0)) + 1
    plain = kit.patch(model_dir, name="acme/plain", seed=11, tokens=3)
    gated = _build(kit, gated_source(tmp_path / "src", weight=weight, bias=0.0, threshold=never), model_dir, tmp_path / "g")
    model, tok = patchkit.load(model_dir, [plain, gated], trust=kit.trust)
    assert model.parts == (3, 4) and model.gated
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    assert set(model.route(enc.input_ids, enc.attention_mask)) == {(True, False)}
    alone = PatchedModel(model.base, model.prefix[:3].clone(), gates=())
    assert model.generate(**enc, max_new_tokens=NEW, do_sample=False).tolist() == \
        alone.generate(**enc, max_new_tokens=NEW, do_sample=False).tolist()


def test_a_mixed_batch_refuses_what_it_cannot_split(kit: Kit, model_dir: Path, tmp_path: Path) -> None:
    import patchkit

    weight, threshold, _ = _split(model_dir)
    art = _build(kit, gated_source(tmp_path / "src", weight=weight, bias=0.25, threshold=threshold), model_dir, tmp_path / "art")
    model, tok = patchkit.load(model_dir, [art], trust=kit.trust)
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    with pytest.raises(UsageError, match="different routes"):
        model(**enc, labels=enc.input_ids)
    # One gated patch: the batch stays one generate call (the left-out prefix masked), so it returns anything generate does.
    out = model.generate(**enc, max_new_tokens=2, do_sample=False, return_dict_in_generate=True)
    assert out.sequences.shape[0] == 4
    from patchkit.runtime.patched import PatchedModel

    split = PatchedModel(model.base, model.prefix.clone(), model.patches, positions="peft")  # routes run one by one
    with pytest.raises(UsageError, match="only the sequences"):
        split.generate(**enc, max_new_tokens=2, do_sample=False, return_dict_in_generate=True)
    one = tok(PROMPTS[:1], return_tensors="pt")  # a single route takes every argument
    assert model.generate(**one, max_new_tokens=2, do_sample=False, return_dict_in_generate=True).sequences.shape[0] == 1


def test_the_signature_covers_the_gate(kit: Kit, model_dir: Path, tmp_path: Path) -> None:
    from patchkit.artifact.verify import verify_artifact
    from patchkit.trust.store import TrustStore

    weight, threshold, _ = _split(model_dir)
    art = _build(kit, gated_source(tmp_path / "src", weight=weight, bias=0.25, threshold=threshold), model_dir, tmp_path / "art")
    trust = TrustStore.load(kit.trust)
    assert verify_artifact(art, trust).manifest.gate is not None
    tampered = tampered_copy(art, tmp_path / "tampered", "gate.safetensors", 0x40)
    with pytest.raises(IntegrityError):
        verify_artifact(tampered, trust)
    gone = tmp_path / "gone"
    shutil.copytree(art, gone)
    (gone / "gate.safetensors").unlink()
    with pytest.raises(IntegrityError):
        verify_artifact(gone, trust)


def test_build_refuses_a_half_gate_and_a_gate_for_another_base(kit: Kit, model_dir: Path, tmp_path: Path) -> None:
    from patchkit.artifact.build import build_artifact

    weight = _weight()
    half = gated_source(tmp_path / "half", weight=weight, bias=0.0, threshold=0.0)
    (half / "gate.json").unlink()
    with pytest.raises(InvalidInputError, match="gate.safetensors but not gate.json"):
        build_artifact(half, tmp_path / "o1", name="acme/x", version="1.0.0", domain="harmfulness", base_model=model_dir)
    other = gated_source(tmp_path / "other", weight=weight, bias=0.0, threshold=0.0,
                         base_digest="pk-tensors-blake3-v1:" + "ab" * 32)
    with pytest.raises(CompatibilityError, match="fitted on base"):
        build_artifact(other, tmp_path / "o2", name="acme/x", version="1.0.0", domain="harmfulness", base_model=model_dir)
    wide = gated_source(tmp_path / "wide", weight=_weight(hidden=32), bias=0.0, threshold=0.0)
    with pytest.raises(InvalidInputError, match="hidden size is 64"):
        build_artifact(wide, tmp_path / "o3", name="acme/x", version="1.0.0", domain="harmfulness", base_model=model_dir)
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))


def test_a_gated_patch_cannot_become_a_composite_or_a_peft_adapter(kit: Kit, model_dir: Path, tmp_path: Path) -> None:
    from patchkit.artifact.compose import compose_artifact
    from patchkit.artifact.verify import VerificationPolicy
    from patchkit.runtime.export import export_peft

    art = _build(kit, gated_source(tmp_path / "src", weight=_weight(), bias=0.0, threshold=0.0), model_dir, tmp_path / "art")
    plain = kit.patch(model_dir, name="acme/plain", seed=11, tokens=3)
    with pytest.raises(CompatibilityError, match="is gated"):
        compose_artifact([plain, art], tmp_path / "ab", name="acme/ab", version="1.0.0",
                         policy=VerificationPolicy.build(kit.trust))
    with pytest.raises(CompatibilityError, match="is gated"):
        export_peft(art, tmp_path / "peft", trust=kit.trust)
    assert not (tmp_path / "ab").exists() and not (tmp_path / "peft").exists()


def test_gate_cli_fits_a_gate_that_build_signs_in(kit: Kit, model_dir: Path, tmp_path: Path) -> None:
    """`patchkit gate` on a training output, then `patchkit build`: the manifest pins the gate the command wrote."""
    from patchkit import constants

    src = tmp_path / "train"
    src.mkdir()
    write_prefix(src / constants.TENSOR_FILE, tokens=4, seed=2)
    (src / constants.TRAINING_FILE).write_text(json.dumps({"method": "sft", "init": "random"}))
    labels = tmp_path / "labels.jsonl"
    rows = [{"prompt": f"How do I hurt person number {i}?", "expect": "refuse"} for i in range(6)]
    rows += [{"prompt": f"How do I bake loaf number {i}?", "response": "Sure: mix flour and water."} for i in range(6)]
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = pk("gate", str(src), "--base", str(model_dir), "--labels", str(labels), "--recall", "0.9", "--layer", "1", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["layer"] == 1 and out["labels"] == 12 and out["stats"]["n_refuse"] == 6 and out["stats"]["n_answer"] == 6
    assert out["stats"]["oof_routed"]["refuse"] >= 0.9
    record = json.loads((src / "gate.json").read_text())
    assert record["threshold"] == out["threshold"] and record["base_digest"].startswith("pk-tensors-")
    r = pk("build", str(src), "--name", "acme/g", "--version", "1.0.0", "--domain", "harmfulness",
                "--base-model", str(model_dir), "--out", str(tmp_path / "art"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["gate"]["threshold"] == record["threshold"]
    manifest = json.loads((tmp_path / "art" / "patchkit.json").read_text())
    assert manifest["gate"]["sha256"] == record["sha256"] and manifest["gate"]["bias"] == record["bias"]
    r = pk("inspect", str(tmp_path / "art"))
    assert r.returncode == 0 and f"gate:     layer 1 probe, the prefix applies when its logit > {record['threshold']:.3f}" in r.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "expect": "maybe"}) + "\n")
    r = pk("gate", str(src), "--base", str(model_dir), "--labels", str(bad))
    assert r.returncode == 6 and "expect must be refuse or answer" in r.stderr
    r = pk("gate", str(src), "--base", str(model_dir), "--labels", str(labels), "--recall", "0")
    assert r.returncode == 2 and "--recall must be in (0, 1]" in r.stderr
    r = pk("gate", str(src), "--base", str(model_dir), "--labels", str(labels), "--l2", "0")
    assert r.returncode == 2 and "--l2 must be positive" in r.stderr
    r = pk("gate", str(src), "--base", str(model_dir), "--labels", str(labels), "--layer", "3")
    assert r.returncode == 6 and "outside the model's blocks 1..2" in r.stderr
    # Neither --layer nor --l2: every candidate is scored out of fold, the best one is fitted and named.
    r = pk("gate", str(src), "--base", str(model_dir), "--labels", str(labels), "--recall", "0.9")
    assert r.returncode == 0, r.stderr
    assert "best of 3 candidates" in r.stdout
    searched = json.loads((src / "gate.json").read_text())["stats"]
    assert [c["layer"] for c in searched["selection"]] == [1, 1, 1]
    assert searched["l2"] == searched["selection"][0]["l2"]
    routed = [c["oof_answer_routed"] for c in searched["selection"]]
    assert routed == sorted(routed) and searched["oof_routed"]["answer"] == routed[0]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma", "gpt2"])
def test_the_gate_pass_stops_early_and_reads_what_the_whole_pass_would(tiny_model_factory: Callable[[str], Path],
                                                                      arch: str) -> None:
    """The hidden state after block L from a pass cut short after block L equals hidden_states[L] of the whole pass."""
    import torch

    from patchkit.lm.loading import load_model
    from patchkit.runtime import gate as gate_mod

    base, tok = load_model(tiny_model_factory(arch))
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    ran: list[int] = []
    blocks = gate_mod._blocks(base)
    assert blocks is not None and len(blocks) == 2
    hooks = [b.register_forward_hook(lambda _m, _a, _o, i=i: ran.append(i)) for i, b in enumerate(blocks)]
    try:
        early = gate_mod.prompt_states(base, enc.input_ids, enc.attention_mask, [1])[1]
    finally:
        for h in hooks:
            h.remove()
    assert ran == [0], "the block after the one read must not run"
    from patchkit.lm.prefix import positions_from_mask

    pos = positions_from_mask(enc.attention_mask)  # as `generate` numbers a padded batch (GPT-2's are absolute)
    with torch.no_grad():
        full = base(**enc, position_ids=pos, output_hidden_states=True).hidden_states[1]
    last = enc.attention_mask.shape[1] - 1  # left padded: every row ends at the last position
    torch.testing.assert_close(early, full[:, last].float(), atol=1e-6, rtol=0)
    whole = gate_mod.prompt_states(base, enc.input_ids, enc.attention_mask, [2])[2]  # the last layer: the whole pass
    with torch.no_grad():
        torch.testing.assert_close(whole, base(**enc, position_ids=pos, output_hidden_states=True).hidden_states[2][:, last].float(),
                                   atol=1e-6, rtol=0)
    with pytest.raises(InvalidInputError, match="blocks 1..2"):
        gate_mod.prompt_states(base, enc.input_ids, enc.attention_mask, [3])
    with pytest.raises(InvalidInputError, match="blocks 1..2"):
        gate_mod.prompt_states(base, enc.input_ids, enc.attention_mask, [0])
    both = gate_mod.prompt_states(base, enc.input_ids, enc.attention_mask, [1, 2])  # two layers, one pass
    torch.testing.assert_close(both[1], early, atol=0, rtol=0)
    torch.testing.assert_close(both[2], whole, atol=1e-6, rtol=0)


def test_the_gate_pass_reads_several_layers_in_one_cut_short_pass() -> None:
    """Several layers below the depth (the gate search's reading): each equals hidden_states[L] of the
    whole pass, and no block after the deepest one runs."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from patchkit.runtime import gate as gate_mod

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=5,
                                        num_attention_heads=4, num_key_value_heads=4)).eval()
    ids = torch.tensor([[0, 0, 5, 6, 7], [1, 2, 3, 4, 9]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    ran: list[int] = []
    blocks = gate_mod._blocks(base)
    assert blocks is not None
    hooks = [b.register_forward_hook(lambda _m, _a, _o, i=i: ran.append(i)) for i, b in enumerate(blocks)]
    try:
        got = gate_mod.prompt_states(base, ids, mask, [3, 1, 2])
    finally:
        for h in hooks:
            h.remove()
    assert ran == [0, 1, 2] and sorted(got) == [1, 2, 3]
    from patchkit.lm.prefix import positions_from_mask

    with torch.no_grad():
        full = base(input_ids=ids, attention_mask=mask, position_ids=positions_from_mask(mask), output_hidden_states=True).hidden_states
    for layer in (1, 2, 3):
        torch.testing.assert_close(got[layer], full[layer][:, -1].float(), atol=1e-6, rtol=0)


def test_a_mixed_batch_is_one_generate_call_when_it_can_be_and_exact_when_it_cannot(kit: Kit, model_dir: Path,
                                                                                   tmp_path: Path) -> None:
    """A gated patch first, an ungated one after: a row the gate skips needs the second part at the prefix's
    start, which masking cannot give, so those rows run apart; either way each row equals its route's model."""
    from unittest import mock

    import patchkit

    weight, threshold, routed = _split(model_dir)
    gated = _build(kit, gated_source(tmp_path / "src", weight=weight, bias=0.25, threshold=threshold), model_dir, tmp_path / "g")
    plain = kit.patch(model_dir, name="acme/plain", seed=11, tokens=3)
    for order, calls_expected in (([plain, gated], 1), ([gated], 1), ([gated, plain], 2)):
        model, tok = patchkit.load(model_dir, order, trust=kit.trust)
        enc = tok(PROMPTS, return_tensors="pt", padding=True)
        routes = model.route(enc.input_ids, enc.attention_mask)
        calls = mock.patch.object(model.base, "generate", wraps=model.base.generate)
        with calls as spy:
            out = model.generate(**enc, max_new_tokens=NEW, do_sample=False)
        assert len(set(routes)) == 2, routes  # the gate sends two prompts one way and two the other
        assert spy.call_count == calls_expected, (order, routes)
        for i, r in enumerate(routes):
            want = model.variant(r).generate(**tok([PROMPTS[i]], return_tensors="pt"), max_new_tokens=NEW, do_sample=False)[0]
            got = out[i][enc.input_ids.shape[1] - len(tok(PROMPTS[i]).input_ids):]
            assert got[: len(want)].tolist() == want.tolist(), (order, i, r)
