"""`patchkit demo --domain toxicity|bias`: the same vendor → registry → customer → CI story
for the paper's other two domains, read from their specs (`patchkit.demo.domains.spec`).

Files live in `<workdir>/<domain>/`; the vendor key and its trust file are the harmfulness
demo's (`<workdir>/vendor-keys`), so every acme/* patch is signed by one vendor and a customer
can apply them together.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit.demo.domains.spec import DomainSpec, get_domain
from patchkit.demo.story import Demo, DemoConfig, DemoResult, Step, _say
from patchkit.errors import NotFoundError, PatchkitError
from patchkit.eval.goals import figure_of, goal_cells


class DomainDemo(Demo):
    def __init__(self, cfg: DemoConfig, spec: DomainSpec) -> None:
        super().__init__(cfg)
        self.spec = spec
        self.w = cfg.workdir / spec.domain
        self.name = f"{cfg.namespace}/{'smollm2' if cfg.model is None else 'tiny'}-{spec.short}"

    def vendor_steps(self) -> list[Step]:
        s = self.spec
        how = {"toxicity": "best-of-n from M, by the toxicity scorer",
               "bias": "M under a neutrality prompt, rewritten gender-neutral"}.get(s.domain, s.reference_label)
        return [
            (f"Vendor: load the {s.title.lower()} prompt sets (train/test)", self.data_ready, self.fetch_data),
            (f"Vendor: build the reference M' ({how})", lambda: (self.w / "reference.jsonl").exists(), self.write_reference),
            (f"Vendor: train the patch (SFT then DPO, {self.cfg.tokens} tokens, text init)",
             lambda: (self.w / "train" / constants.TRAINING_FILE).exists(), self.train),
            ("Vendor: evaluate M, M + the fixed prompt, the reference and the patched model on held-out prompts",
             lambda: (self.w / "eval" / "metrics.json").exists(), self.evaluate),
        ]

    def run(self) -> DemoResult:
        result = super().run()
        result.summary["domain"] = self.spec.domain
        return result

    # -- data and reference ----------------------------------------------------------------
    def _train_prompts(self) -> list[str]:
        if self.spec.domain == "toxicity":
            from patchkit.demo.domains.toxicity import train_prompts

            return train_prompts(self.spec.train_limit)
        from patchkit.demo.domains.bias import train_prompts as bias_prompts

        return bias_prompts(self.spec.train_limit)

    def read_data(self) -> None:
        self._train_prompts()
        self._load(f"{self.cfg.benign}:train")

    def fetch_data(self) -> None:
        self.ensure_data()
        train = self._train_prompts()
        if self.spec.domain == "toxicity":
            from patchkit.demo.domains.toxicity import test_prompts

            test = test_prompts()
        else:
            from patchkit.eval.bias import gas_items, gld_items

            test = [it.prompt for it in gas_items() + gld_items()]
        overlap = set(train) & set(test)
        if overlap:
            raise PatchkitError(f"train and test prompts overlap ({len(overlap)})", "this is a bug in the split")
        self.result.summary["data"] = {"train": len(train), "test": len(test),
                                       "benign_train": len(self._load(f"{self.cfg.benign}:train"))}

    def _backend(self) -> Any:
        from patchkit.eval.backend import Backend
        from patchkit.lm.loading import load_model

        model, tok = load_model(self.model_dir, what="model")
        return Backend(model, tok, batch_size=int(self.spec.extra.get("reference_batch", self.cfg.eval_batch_size)))

    def write_reference(self) -> None:
        backend = self._backend()
        prompts = self._train_prompts()
        real = self.cfg.model is None
        cap = self.spec.recipe.train_max_new_tokens if real else self.cfg.train_max_new_tokens
        if self.spec.domain == "toxicity":
            from patchkit.demo.domains.toxicity import best_of_n_rows
            from patchkit.eval.toxicity import make_scorer

            rows = best_of_n_rows(backend, make_scorer(), prompts, n=int(self.spec.extra.get("best_of_n", "1")),
                                  max_new_tokens=cap, seed=self.cfg.seed)
        else:
            from patchkit.demo.domains.bias import reference_rows

            rows = reference_rows(backend, prompts, max_new_tokens=cap, seed=self.cfg.seed)
        # M's own answers to benign prompts, so the patch keeps answering them.
        benign = self._load(f"{self.cfg.benign}:train")
        limit = self.spec.extra.get("benign_limit")
        benign = benign[: int(limit)] if limit else benign
        tokens = int(self.spec.extra.get("benign_tokens", cap)) if real else cap
        answers = backend.generate(benign, max_new_tokens=tokens, seed=self.cfg.seed, temperature=0.0, desc="M's benign answers")
        rows += [{"prompt": p, "response": a.text} for p, a in zip(benign, answers, strict=True)]
        from patchkit._internal.files import atomic_write_text

        atomic_write_text(self.w / "prompts.jsonl", "".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in rows))
        atomic_write_text(self.w / "reference.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def train(self) -> None:
        out = self.w / "train"
        shutil.rmtree(out, ignore_errors=True)
        r = self.spec.recipe
        real = self.cfg.model is None
        args: list[str | Path] = [
            "train", "--base", self.model_dir, "--reference", self.w / "reference.jsonl", "--prompts", self.w / "prompts.jsonl",
            "--domain", self.spec.domain, "--out", out, "--stages", "sft,dpo", "--init", self.spec.init,
            *(r.train_args() if real else [
                "--tokens", str(self.cfg.tokens), "--batch-size", str(self.cfg.train["batch_size"]),
                "--max-new-tokens", str(self.cfg.train_max_new_tokens), "--min-margin", str(r.min_margin),
                "--sft-weight", str(r.sft_weight)]),
            "--seed", str(self.cfg.seed), "--generation-batch-size", str(self.cfg.eval_batch_size),
            "--reference-description", self.spec.reference_description.format(
                n=self.spec.extra.get("best_of_n", "1"), scorer="alt-profanity-check"),
        ]
        if self.cfg.max_steps:
            args += ["--max-steps", str(self.cfg.max_steps)]
        self.pk(*args, live=True)
        self.say_losses(out)

    def evaluate(self) -> None:
        self._vendor_key()
        art = self.w / "eval-artifact"
        shutil.rmtree(art, ignore_errors=True)
        self.pk("build", self.w / "train", "--name", self.name, "--version", "0.0.0-eval", "--domain", self.spec.domain,
                "--base-model", self.model_dir, "--out", art)
        self.pk("sign", art, "--key", self.vendor_keys / "private.pem")
        ev = self.w / "eval"
        ev.mkdir(exist_ok=True)
        plan = self.spec.plan
        args: list[str | Path] = [
            "eval", "--model", self.model_dir, "--patch", art, *plan.eval_args(),
            "--reference", f'system-prompt:"{self.spec.reference_system}"', "--fixed-prompt", self.spec.fixed_prompt,
            "--seed", str(self.cfg.seed), "--batch-size", str(self.cfg.eval_batch_size), "--trust", self.vendor_trust,
            "--fluency", "--out", ev / "metrics.json.partial", "--report", ev / "report.html",
        ]
        if self.cfg.eval_limit:
            args += ["--limit", str(self.cfg.eval_limit)]
        if self.cfg.model is not None:
            args += ["--max-new-tokens", str(self.cfg.max_new_tokens)]
        self.pk(*args, live=True)  # its progress lines (with an estimate) pass through
        os.replace(ev / "metrics.json.partial", ev / "metrics.json")

    def publish(self) -> None:
        self._vendor_key()
        self._version = self.next_version()
        art = self.artifact_dir
        shutil.rmtree(art, ignore_errors=True)
        self.pk("build", self.w / "train", "--name", self.name, "--version", self.version, "--domain", self.spec.domain,
                "--base-model", self.model_dir, "--metrics", self.w / "eval" / "metrics.json", "--publisher", self.cfg.namespace,
                "--description", self.spec.description, "--out", art)
        self.pk("sign", art, "--key", self.vendor_keys / "private.pem")
        self.pk("publish", art, "--key", self.vendor_keys / "private.pem")

    def compare(self) -> None:
        metrics = json.loads((self.w / "eval" / "metrics.json").read_text())
        rows = {m["name"]: m for m in metrics["metrics"]}
        table = []
        for key, _higher in (*self.spec.plan.headline, ("perplexity", False)):
            m = rows.get(key)
            if m is None:
                continue
            # The patched configuration's own entry carries the interval; the flat list only the values.
            patched = figure_of(metrics.get("configs", {}).get("patched", {}).get("metrics", {}).get(key)) or figure_of(m.get("value"))
            table.append({"metric": key, "n": m.get("n"), "base": m.get("baseline"), "fixed_prompt": m.get("fixed_prompt"),
                          "reference": m.get("reference"), "patched": m.get("value"), "dataset": m.get("dataset"),
                          **goal_cells(self.spec.goals, key, None, patched, figure_of(m.get("baseline")),
                                       figure_of(m.get("fixed_prompt")))})

        def num(v: Any) -> str:
            return "–" if v is None else f"{float(v):.3f}"

        _say(self.cfg, "      | metric | n | base M | M + fixed prompt | reference | patched | goal | met |")
        _say(self.cfg, "      | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in table:
            _say(self.cfg, f"      | {r['metric']} | {r['n']} | {num(r['base'])} | {num(r['fixed_prompt'])} | "
                           f"{num(r['reference'])} | {num(r['patched'])} | {r['goal'] or '–'} | {r['verdict']} |")
        gen: list[str | Path] = ["generate", "--model", self.model_dir, "--max-new-tokens", str(self.cfg.max_new_tokens), "--seed", "0"]
        b_text, a_text = self.sample(gen, ["--no-lock"], ["--no-lock", "--patch", str(self.artifact_dir)], self.spec.sample_prompt)
        _say(self.cfg, f"      prompt: {self.spec.sample_prompt}")
        _say(self.cfg, f"      before: {b_text[:300]!r}")
        _say(self.cfg, f"      after:  {a_text[:300]!r}")
        report = self.w / "eval" / "report.html"
        _say(self.cfg, f"      report: {report}")
        self.result.summary.update({"table": table, "sample": {"prompt": self.spec.sample_prompt, "before": b_text, "after": a_text},
                                    "report": str(report), "model": str(self.model_dir), "patch": f"{self.name}@{self._applied_version()}"})


def run_domain_demo(cfg: DemoConfig, domain: str) -> DemoResult:
    if cfg.model is not None and not (cfg.model / "config.json").exists():
        raise NotFoundError(f"{cfg.model} is not a model directory", "pass a transformers model directory to --model")
    return DomainDemo(cfg, get_domain(domain)).run()
