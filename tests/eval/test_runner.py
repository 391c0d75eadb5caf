"""run_eval and `patchkit eval`: the configurations, the metrics format, and bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from patchkit.errors import InvalidInputError, NotFoundError, UsageError
from patchkit.eval import CallableConfig, run_eval
from patchkit.eval.runner import ResponsesConfig
from patchkit.manifest import Metric
from tests.eval.conftest import last_json

REFUSE = "I'm sorry, but I can't help with that."
COMPLY = "Sure, here is how: first gather the materials."


def _cfgs() -> list[CallableConfig]:
    return [
        CallableConfig("baseline", "always complies", lambda ps: [COMPLY for _ in ps]),
        CallableConfig("fixed_prompt", "always refuses", lambda ps: [REFUSE for _ in ps]),
        CallableConfig("patched", "refuses the harmful", lambda ps: [REFUSE if "forbidden" in p else COMPLY for p in ps]),
    ]


def test_harmfulness_with_injected_configs(fake_wheels: Path, tmp_path: Path) -> None:
    harmful = [f"Synthetic harmful behaviour number {i}: explain how to do forbidden thing {i}" for i in range(200)]
    from patchkit.eval.datasets import load_dataset

    test_prompts = load_dataset("harmbench:test").prompts
    # A reference JSONL covering only the first 10 test prompts and no benign ones.
    ref = tmp_path / "ref.jsonl"
    ref.write_text("".join(json.dumps({"prompt": p, "response": REFUSE if i % 2 else COMPLY}) + "\n"
                           for i, p in enumerate(test_prompts[:10])))
    cfgs = [*_cfgs(), ResponsesConfig("reference", "ref", {json.loads(x)["prompt"]: json.loads(x)["response"]
                                                            for x in ref.read_text().splitlines()})]
    out = tmp_path / "m.json"
    res = run_eval(None, suite="harmfulness", configs=cfgs, out=out, limit=None)
    rows = {m["name"]: m for m in res.metrics}
    assert set(rows) == {"refusal_rate", "answer_rate", "over_refusal"}
    r = rows["refusal_rate"]
    assert (r["value"], r["baseline"], r["fixed_prompt"], r["reference"]) == (1.0, 0.0, 1.0, 0.5)
    assert r["n"] == 60 and r["dataset"] == "harmbench:test" and r["higher_is_better"] is True
    assert r["scorer"] == "refusal-markers-v2"
    o = rows["over_refusal"]
    assert (o["value"], o["baseline"], o["fixed_prompt"], o["reference"]) == (0.0, 0.0, 1.0, None)
    assert o["higher_is_better"] is False and o["n"] >= 40
    assert rows["answer_rate"]["fixed_prompt"] == 0.0
    assert res.configs["reference"]["metrics"]["refusal_rate"]["n"] == 10
    assert all(p in harmful for p in test_prompts)
    # The file on disk: the manifest's metrics format plus configs and settings.
    data = json.loads(out.read_text())
    assert set(data) >= {"metrics", "configs", "settings"}
    for m in data["metrics"]:
        assert set(m) == set(Metric.model_fields)
        Metric.model_validate(m)
    assert data["settings"]["decoding"]["strategy"] == "greedy" and data["settings"]["seed"] == 0
    assert "hand_labelled_check" not in data["detector"]  # the in-sample figure is not reported
    oos = data["detector"]["out_of_sample"]
    assert oos is None or (oos["n"] >= 300 and oos["labelled_by"])
    samples = data["configs"]["patched"]["samples"]["harmbench:test"]
    assert len(samples) == 60 and samples[0]["refused"] is True and "reason" in samples[0]


def test_toxicity_with_plugin_scorer(tmp_path: Path) -> None:
    from patchkit.eval import toxicity

    class Fake:
        name = "fake-tox"

        def score(self, texts: list[str]) -> list[float]:
            return [0.9 if "rude" in t else 0.1 for t in texts]

    toxicity.register_scorer("fake-tox", Fake)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a\nb\nc\nd\n")
    cfgs = [CallableConfig("baseline", "b", lambda ps: ["rude" if p in "ab" else "nice" for p in ps]),
            CallableConfig("patched", "p", lambda ps: ["nice" for _ in ps])]
    try:
        res = run_eval(None, suite="toxicity", prompts=str(prompts), configs=cfgs, toxicity_scorer="fake-tox")
    finally:
        toxicity.unregister_scorer("fake-tox")
    rows = {m["name"]: m for m in res.metrics}
    assert rows["toxicity_mean"]["baseline"] == pytest.approx(0.5)
    assert rows["toxicity_mean"]["value"] == pytest.approx(0.1)
    assert rows["toxicity_max"]["baseline"] == pytest.approx(0.9)
    assert rows["toxic_rate"]["baseline"] == pytest.approx(0.5) and rows["toxic_rate"]["value"] == 0.0
    assert rows["toxicity_mean"]["scorer"] == "fake-tox" and rows["toxicity_mean"]["fixed_prompt"] is None


def test_bias_with_injected_configs() -> None:
    cfgs = [CallableConfig("baseline", "b", lambda ps: ["He works hard." for _ in ps], lambda items: [2.0, -1.0] * (len(items) // 2)),
            CallableConfig("patched", "p", lambda ps: ["They work hard." for _ in ps], lambda items: [0.5] * len(items))]
    res = run_eval(None, suite="bias", configs=cfgs, limit=4)
    rows = {m["name"]: m for m in res.metrics}
    assert rows["gas"]["baseline"] == 1.0 and rows["gas"]["value"] == 0.0
    assert rows["gld"]["baseline"] == pytest.approx(1.5) and rows["gld"]["value"] == pytest.approx(0.5)
    assert res.configs["baseline"]["metrics"]["gld"]["signed_mean"] == pytest.approx(0.5)


def test_api_refuses_bad_input(tmp_path: Path, fake_wheels: Path) -> None:
    with pytest.raises(UsageError):
        run_eval(None, suite="nonsense", configs=_cfgs())
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(InvalidInputError):
        run_eval(None, suite="harmfulness", prompts=str(empty), configs=_cfgs())
    with pytest.raises(UsageError):
        run_eval(None, suite="harmfulness", configs=_cfgs(), max_new_tokens=0)
    with pytest.raises(UsageError):
        run_eval(None, suite="harmfulness")


def test_evalconfig_and_the_keyword_form_run_the_same_evaluation(fake_wheels: Path) -> None:
    from patchkit.eval import EvalConfig

    by_keywords = run_eval(None, suite="harmfulness", configs=_cfgs(), limit=20, seed=3)
    by_config = run_eval(EvalConfig("harmfulness", configs=_cfgs(), limit=20, seed=3))
    assert by_config.metrics == by_keywords.metrics
    drop = ("created_at", "seconds")
    assert {k: v for k, v in by_config.settings.items() if k not in drop} == \
        {k: v for k, v in by_keywords.settings.items() if k not in drop}
    assert by_config.settings["limit"] == 20 and by_config.settings["seed"] == 3
    with pytest.raises(UsageError, match="not both"):
        run_eval(EvalConfig("harmfulness", configs=_cfgs()), limit=3)
    with pytest.raises(TypeError, match="nonsense"):
        run_eval(None, suite="harmfulness", configs=_cfgs(), nonsense=1)
    with pytest.raises(UsageError, match="unknown suite"):
        run_eval(EvalConfig("nonsense", configs=_cfgs()))


# -- real tiny models -------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.slow
def test_cli_harmfulness_end_to_end_and_build_embeds(tiny_model_factory, fake_wheels: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                      run_cli) -> None:
    model = tiny_model_factory("llama")
    out, report = tmp_path / "metrics.json", tmp_path / "r.html"
    ref = tmp_path / "ref.jsonl"
    from patchkit.eval.datasets import load_dataset

    ref.write_text(json.dumps({"prompt": load_dataset("harmbench:test").prompts[0], "response": REFUSE}) + "\n")
    code, stdout, err = run_cli("eval", "--model", model, "--suite", "harmfulness", "--prompts", "harmbench:test",
                                "--limit", "5", "--max-new-tokens", "6", "--reference", ref, "--out", out,
                                "--report", report, "--json")
    assert code == 0, err
    payload = last_json(stdout)
    assert payload["ok"] and payload["configs"] == ["baseline", "fixed_prompt", "reference"]
    data = json.loads(out.read_text())
    assert data["metrics"] == payload["metrics"]
    rr = next(m for m in data["metrics"] if m["name"] == "refusal_rate")
    assert rr["n"] == 5 and rr["reference"] == 1.0 and rr["value"] == rr["baseline"]  # no patch: value is M's
    assert data["settings"]["decoding"]["max_new_tokens"] == 6
    base_samples = data["configs"]["baseline"]["samples"]["harmbench:test"]
    share = sum(s["truncated"] for s in base_samples) / len(base_samples)
    assert data["configs"]["baseline"]["metrics"]["truncated_share_harmful"]["value"] == pytest.approx(share)
    assert report.read_text().startswith("<!DOCTYPE html>")
    # `patchkit build --metrics` takes the file as is.
    from tests.tiny import random_prefix

    src = random_prefix(tmp_path / "prefix.safetensors")
    art = tmp_path / "art"
    code, _, err = run_cli("build", src, "--name", "acme/tox", "--version", "1.0.0", "--domain", "harmfulness",
                           "--base-model", model, "--metrics", out, "--out", art)
    assert code == 0, err
    manifest = json.loads((art / "patchkit.json").read_text())
    assert manifest["metrics"] == data["metrics"]


@pytest.mark.torch
@pytest.mark.slow
def test_generation_is_deterministic_and_configs_share_decoding(tiny_model_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    prompts = tmp_path / "p.txt"
    prompts.write_text("How do I bake bread at home?\nWrite a short poem about the sea.\nTell me about the printing press.\n")
    kw = dict(suite="utility", prompts=str(prompts), max_new_tokens=8, batch_size=2, reference='system-prompt:"Be safe."',
              fixed_prompt="Be safe.")
    a = run_eval(tiny_model_factory("llama"), **kw)  # type: ignore[arg-type]
    b = run_eval(tiny_model_factory("llama"), **kw)  # type: ignore[arg-type]
    sa, sb = a.configs, b.configs
    for c in ("baseline", "fixed_prompt", "reference"):
        assert sa[c]["samples"] == sb[c]["samples"]
    # The reference here is M under the same system prompt as fixed_prompt: identical replies.
    assert sa["reference"]["samples"] == sa["fixed_prompt"]["samples"]
    ppl = next(m for m in a.metrics if m["name"] == "perplexity")
    assert ppl["higher_is_better"] is False and math.isfinite(ppl["value"]) and ppl["value"] > 1


@pytest.mark.torch
def test_perplexity_equals_direct_computation(tiny_model_factory) -> None:  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from patchkit.eval.backend import Backend
    from patchkit.eval.fluency import perplexity

    path = tiny_model_factory("llama")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    backend = Backend(model, tok, batch_size=2)
    prompts, replies = ["How do I bake bread?", "Hello"], ["Mix flour and water.", "Hi there, thank you."]
    nll = 0.0
    n = 0
    for p, r in zip(prompts, replies, strict=True):
        pre = tok(backend.format(p), add_special_tokens=False)["input_ids"]
        cont = tok(r, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([pre + cont])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        for k, t in enumerate(cont):
            nll -= float(logp[len(pre) + k - 1, t])
        n += len(cont)
    got, scored = perplexity(backend, [*prompts, "x"], [*replies, "  "])
    assert scored == 2
    assert got == pytest.approx(math.exp(nll / n), rel=1e-4)


@pytest.mark.torch
def test_bias_suite_on_tiny_model(tiny_model_factory) -> None:  # type: ignore[no-untyped-def]
    res = run_eval(tiny_model_factory("llama"), suite="bias", limit=6, max_new_tokens=6)
    rows = {m["name"]: m for m in res.metrics}
    assert set(rows) == {"gas", "gld"}
    assert rows["gld"]["n"] == 6 and rows["gld"]["baseline"] >= 0 and rows["gld"]["fixed_prompt"] is not None
    assert 0.0 <= rows["gas"]["baseline"] <= 1.0


@pytest.mark.torch
def test_judges(tiny_model_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import torch
    import transformers as tf

    from patchkit.eval.refusal import ModelJudge
    from tests.tiny import make_tokenizer

    prompts = tmp_path / "p.txt"
    prompts.write_text("q1\nq2\n")
    res = run_eval(None, suite="utility", prompts=str(prompts), configs=_cfgs()[:1], judge=tiny_model_factory("llama"))
    assert res.metrics[0]["scorer"] == f"judge:{tiny_model_factory('llama').name}"
    assert res.detector["name"].startswith("judge:")
    # A classifier judge, checked against its own softmax.
    out = tmp_path / "clf"
    tok = make_tokenizer(out)
    cfg = tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=2, pad_token_id=tok.pad_token_id,
                         id2label={0: "complied", 1: "refusal"}, label2id={"complied": 0, "refusal": 1})
    torch.manual_seed(1)
    tf.LlamaForSequenceClassification(cfg).save_pretrained(out)
    judge = ModelJudge(out, prompt="{response}")
    v = judge.judge(["p"], [REFUSE], [False])
    enc = judge.tokenizer([REFUSE], return_tensors="pt")
    with torch.no_grad():
        p1 = float(torch.softmax(judge.model(**enc).logits, -1)[0, 1])
    assert v[0].refused == (p1 > 0.5) and v[0].reason.endswith(f"{p1:.3f}")


def test_cli_bad_input_exit_codes(tmp_path: Path, tiny_model: Path, run_cli, fake_wheels: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "m.json"
    base = ["eval", "--model", tiny_model, "--out", out, "--json"]
    code, stdout, err = run_cli(*base, "--suite", "nonsense")
    assert code == 2 and "unknown suite" in err and last_json(stdout)["exit_code"] == 2
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    code, _, err = run_cli(*base, "--suite", "harmfulness", "--prompts", empty)
    assert code == 6 and "no prompts" in err
    notmodel = tmp_path / "notmodel"
    notmodel.mkdir()
    (notmodel / "readme.txt").write_text("x")
    code, _, err = run_cli(*base, "--suite", "harmfulness", "--judge", notmodel)
    assert code == 6 and "not a model" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    code, _, err = run_cli(*base, "--suite", "utility", "--judge", broken)
    assert code == 6 and "could not be loaded" in err
    code, _, err = run_cli(*base, "--suite", "harmfulness", "--judge", tmp_path / "missing")
    assert code == 7
    code, _, err = run_cli(*base, "--suite", "harmfulness", "--prompts", "nosuchset")
    assert code == 7 and "patchkit data list" in err
    code, _, err = run_cli(*base, "--suite", "harmfulness", "--reference", tmp_path / "nope.jsonl")
    assert code == 7
    code, _, err = run_cli("eval", "--model", tmp_path / "nomodel", "--suite", "utility", "--out", out)
    assert code == 7
    assert not out.exists()  # nothing written on refusal


def test_reference_jsonl_without_responses_is_refused(tmp_path: Path) -> None:
    from patchkit.eval.runner import _reference_config

    ref = tmp_path / "r.jsonl"
    ref.write_text('{"prompt": "a"}\n')
    with pytest.raises(InvalidInputError):
        _reference_config(str(ref), None, 8, "auto")
    with pytest.raises(NotFoundError):
        _reference_config(str(tmp_path / "missing"), None, 8, "auto")
    with pytest.raises(UsageError):
        _reference_config('system-prompt:""', None, 8, "auto")


@pytest.mark.torch
@pytest.mark.slow
def test_patched_configuration_uses_the_runtime(tiny_model_factory, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    import torch

    from patchkit.eval.backend import Backend
    from patchkit.eval.bias import gld_items
    from patchkit.eval.runner import ModelConfig
    from patchkit.runtime import load
    from tests.helpers import make_signed_patch

    model = tiny_model_factory("llama")
    art, _keys = make_signed_patch(tmp_path, base_model=model)
    prompts = tmp_path / "p.txt"
    prompts.write_text("How do I bake bread at home?\nWrite a short poem about the sea.\n")
    out = tmp_path / "m.json"
    code, stdout, err = run_cli("eval", "--model", model, "--patch", art, "--suite", "utility", "--prompts", prompts,
                                "--max-new-tokens", "8", "--no-fixed-prompt", "--out", out, "--json")
    assert code == 0, err
    data = json.loads(out.read_text())
    assert list(data["configs"]) == ["baseline", "patched"] and data["settings"]["value_from"] == "patched"
    # The patched replies are exactly what the runtime generates with the patch applied.
    pm, tok = load(model, patches=[str(art)], verify=True)
    be = Backend(pm, tok, batch_size=1, explicit_positions=False)
    direct = be.generate(["How do I bake bread at home?", "Write a short poem about the sea."], max_new_tokens=8)
    got = data["configs"]["patched"]["samples"]["p.txt"]
    assert [s["completion"] for s in got] == [c.text for c in direct]
    ppl = next(m for m in data["metrics"] if m["name"] == "perplexity")
    assert ppl["value"] == data["configs"]["patched"]["metrics"]["perplexity"]["value"]
    # GLD of the patched model: the patch's prefix changes the next-token logits, computed directly.
    items = gld_items()[:3]
    gaps = ModelConfig("patched", "p", Backend(pm, tok, batch_size=3, explicit_positions=False)).gaps(items)
    he, she = (tok(w, add_special_tokens=False)["input_ids"][0] for w in (" he", " she"))
    hand = []
    for it in items:
        with torch.no_grad():
            last = pm(input_ids=torch.tensor([tok(it.prompt)["input_ids"]])).logits[0, -1]
        hand.append(float(last[he] - last[she]))
    assert gaps == pytest.approx(hand, abs=1e-4)


@pytest.mark.torch
def test_bias_suite_crows_pairs_and_winobias(tiny_model_factory, fake_wheels: Path) -> None:  # type: ignore[no-untyped-def]
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from patchkit.eval.datasets import load_dataset
    from patchkit.eval.runner import SENTENCE_LEAD_IN

    path = tiny_model_factory("llama")
    res = run_eval(path, suite="bias", prompts="crows-pairs", limit=2, max_new_tokens=4, fixed_prompt=None)
    rows = {m["name"]: m for m in res.metrics}
    assert set(rows) == {"gas", "crows_bias"} and rows["crows_bias"]["n"] == 2
    # Hand computation: sentence log-probabilities after the lead-in, pair by pair.
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)

    def lp(sentence: str) -> float:
        pre = tok(SENTENCE_LEAD_IN)["input_ids"]
        cont = tok(" " + sentence, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([pre + cont])).logits[0], -1)
        return sum(float(logp[len(pre) + k - 1, t]) for k, t in enumerate(cont))

    items = load_dataset("crows-pairs", limit=2).items
    rate = sum(lp(it.meta["more"]) > lp(it.meta["less"]) for it in items) / 2
    assert rows["crows_bias"]["value"] == pytest.approx(abs(2 * rate - 1))
    assert res.configs["baseline"]["metrics"]["crows_bias"]["stereotype_preference"] == rate
    # WinoBias prefixes feed GLD with their own pronoun pairs.
    res = run_eval(path, suite="bias", prompts="winobias", limit=3, max_new_tokens=4, fixed_prompt=None)
    gld = next(m for m in res.metrics if m["name"] == "gld")
    assert gld["n"] == 3 and gld["dataset"] == "winobias:all" and gld["value"] >= 0


@pytest.mark.torch
def test_reference_model_directory(tiny_model_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from patchkit.eval.backend import Backend
    from patchkit.lm.loading import load_model

    prompts = tmp_path / "p.txt"
    prompts.write_text("How do I bake bread at home?\nWrite a short poem about the sea.\n")
    other = tiny_model_factory("llama", seed=1)
    res = run_eval(tiny_model_factory("llama"), suite="utility", prompts=str(prompts), max_new_tokens=6,
                   reference=str(other), fixed_prompt=None)
    assert list(res.configs) == ["baseline", "reference"]
    m, tok = load_model(other)
    direct = Backend(m, tok).generate(["How do I bake bread at home?", "Write a short poem about the sea."], max_new_tokens=6)
    assert [s["completion"] for s in res.configs["reference"]["samples"]["p.txt"]] == [c.text for c in direct]
    assert all(m["reference"] is not None for m in res.metrics)
