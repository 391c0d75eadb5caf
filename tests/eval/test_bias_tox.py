"""Bias (GAS, GLD) and toxicity scorers on inputs with known answers."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import pytest

from patchkit.errors import InvalidInputError, NotFoundError
from patchkit.eval import bias, toxicity


def test_gas_on_known_strings() -> None:
    comps = [
        "They arrived early and checked the schedule.",
        "He fixed the pipe before lunch.",
        "She greeted her patients.",
        "The engineer and his wife, who is a woman of science, talked.",
        "The hero reached the shelter.",  # 'he' inside 'hero'/'the'/'shelter' does not count
    ]
    value, detail = bias.gas(comps)
    assert value == pytest.approx(3 / 5)
    assert detail == {"male_only": 1, "female_only": 1, "both": 1, "n": 5, "signed": 0.0}
    assert bias.gas(["They left.", "It works."])[0] == 0.0
    with pytest.raises(ValueError):
        bias.gas([])


def test_gld_aggregation() -> None:
    assert bias.gld_from_gaps([1.0, -3.0, 0.5]) == (pytest.approx(1.5), pytest.approx(-0.5))
    items = bias.gld_items()
    assert len(items) == len(bias.GLD_TEMPLATES) * len(bias.PROFESSIONS)
    assert all(it.prompt.count(it.meta["profession"]) == 1 for it in items)


@pytest.mark.torch
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_gld_equals_hand_computed_logit_gap(tiny_model_factory, arch: str) -> None:  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from patchkit.eval.backend import Backend
    from patchkit.eval.runner import ModelConfig

    path = tiny_model_factory(arch)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    items = bias.gld_items()[::13]  # prefixes of different lengths, so batches are padded
    he, she = (tok(w, add_special_tokens=False)["input_ids"] for w in (" he", " she"))
    assert len(he) == len(she) == 1, "the hand computation below assumes single-token pronouns"
    hand = []
    for it in items:
        ids = torch.tensor([tok(it.prompt)["input_ids"]])
        with torch.no_grad():
            last = model(input_ids=ids).logits[0, -1]
        hand.append(float(last[he[0]] - last[she[0]]))
    cfg = ModelConfig("baseline", "M", Backend(model, tok, batch_size=4))
    got = cfg.gaps(items)
    assert got is not None
    assert got == pytest.approx(hand, abs=1e-4)
    assert bias.gld_from_gaps(got)[0] == pytest.approx(sum(abs(h) for h in hand) / len(hand), abs=1e-4)
    # A system-prompt configuration reads the preamble as plain text in front of the prefix.
    pre = "Be fair."
    ids = torch.tensor([tok(pre + "\n\n" + items[0].prompt)["input_ids"]])
    with torch.no_grad():
        last = model(input_ids=ids).logits[0, -1]
    fixed = ModelConfig("fixed_prompt", "M+", Backend(model, tok), system=pre).gaps(items[:1])
    assert fixed == pytest.approx([float(last[he[0]] - last[she[0]])], abs=1e-4)


class _Fake:
    name = "fake-tox"

    def score(self, texts: Sequence[str]) -> list[float]:
        return [1.0 if "darn" in t else 0.0 for t in texts]


def test_scorer_plugin_registry() -> None:
    toxicity.register_scorer("fake-tox", _Fake)
    try:
        s = toxicity.make_scorer("fake-tox")
        assert s.score(["darn it", "hello"]) == [1.0, 0.0]
    finally:
        toxicity.unregister_scorer("fake-tox")
    with pytest.raises(NotFoundError):
        toxicity.make_scorer("fake-tox")


def test_default_scorer_profanity_check() -> None:
    if importlib.util.find_spec("profanity_check") is None:
        with pytest.raises(NotFoundError, match="alt-profanity-check"):
            toxicity.make_scorer(None)
        return
    s = toxicity.make_scorer(None)
    assert s.name.startswith("alt-profanity-check")
    clean, rude, empty = s.score(["Have a lovely day at the park.", "shut up you stupid fucking idiot", ""])
    assert 0.0 <= clean < 0.5 < rude <= 1.0
    assert 0.0 <= empty <= 1.0


def test_detoxify_without_weights_is_a_clear_error() -> None:
    with pytest.raises(NotFoundError):
        toxicity.make_scorer("detoxify")


def test_classifier_dir_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InvalidInputError):
        toxicity.make_scorer(str(tmp_path))


@pytest.mark.torch
def test_classifier_dir_scorer(tmp_path: Path) -> None:
    import torch
    import transformers as tf

    from tests.tiny import make_tokenizer

    out = tmp_path / "clf"
    tok = make_tokenizer(out)
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=2, pad_token_id=tok.pad_token_id,
                         id2label={0: "non-toxic", 1: "toxic"}, label2id={"non-toxic": 0, "toxic": 1})
    torch.manual_seed(0)
    model = tf.LlamaForSequenceClassification(cfg)
    model.save_pretrained(out)
    s = toxicity.make_scorer(str(out))
    texts = ["hello world", "I'm sorry, but I cannot assist.", "bake bread"]
    scores = s.score(texts)
    assert len(scores) == 3 and all(0.0 <= x <= 1.0 for x in scores)
    # It is the model's toxic-class probability: check against a direct computation.
    enc = s.tokenizer([texts[0]], return_tensors="pt")  # type: ignore[attr-defined]
    with torch.no_grad():
        p = torch.softmax(s.model(**enc).logits, -1)[0, 1]  # type: ignore[attr-defined]
    assert scores[0] == pytest.approx(float(p), abs=1e-5)


@pytest.mark.torch
@pytest.mark.parametrize("which", ["toxicity scorer", "refusal judge"])
def test_a_broken_model_dir_error_keeps_its_cause(tmp_path: Path, which: str) -> None:
    """The one-line error names the failure; the original exception stays chained for PATCHKIT_DEBUG."""
    from patchkit.eval import refusal

    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(InvalidInputError, match="could not be loaded as a") as info:
        if which == "toxicity scorer":
            toxicity.ClassifierScorer(tmp_path)
        else:
            refusal.make_detector(tmp_path)
    assert info.value.__cause__ is not None
