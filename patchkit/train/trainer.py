"""`train_patch`: the paper's method (SFT then DPO on a prefix), end to end, with an optional
representation stage ("repr", see `patchkit.train.representation`) before it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from patchkit import constants
from patchkit._internal.cores import CoreHandover
from patchkit._internal.files import atomic_write_bytes, atomic_write_text
from patchkit._internal.jsonio import dumps_canonical
from patchkit.artifact.layout import prompt_tuning_config
from patchkit.errors import InvalidInputError, NotFoundError, UsageError
from patchkit.lm.loading import load_model, pick_device
from patchkit.manifest import validate_domain
from patchkit.train.benign import benign_pairs
from patchkit.train.checkpoint import TrainState
from patchkit.train.config import TrainConfig, make_config
from patchkit.train.data import DataRecord, Prompt, prompts_from_list, read_prompts
from patchkit.train.dpo import Pair, reference_logprobs
from patchkit.train.generation import (
    GenerationCache,
    GenerationSettings,
    encode_prompt,
    format_prompt,
    generate_cached,
)
from patchkit.train.model import Example, PrefixLM, start_prefix
from patchkit.train.onpolicy import policy_replies
from patchkit.train.proxy import (
    DECISION,
    PROXY_NAME,
    REFUSAL_OPENINGS,
    ProxyScore,
    agreement,
    proxy_shares,
    refusal_scores,
)
from patchkit.train.reference import (
    ModelReference,
    Reference,
    ResponsesReference,
    SystemPromptReference,
    parse_reference,
)
from patchkit.train.representation import Probe, default_layer, fit_probe, prompt_hidden
from patchkit.train.scorer import Scorer, scorer_for
from patchkit.train.selection import (
    SelectionRule,
    Tracker,
    ValidationPoint,
    ValidationRow,
    ValidationSet,
    judge,
    parse_select,
    read_validation,
    score_replies,
)
from patchkit.train.stages import DpoObjective, Objective, ReprObjective, SftObjective, Shard, schedule

ON_POLICY_NOTE = (
    "DPO rejected replies sampled from the SFT-patched policy (on-policy pairs): this goes beyond the paper, which takes "
    "the base model's replies as rejected"
)


class StopTraining(Exception):
    """Raised by the `stop_after` test hook, as if the process had been killed."""


@dataclass
class TrainResult:
    out: Path
    prefix: torch.Tensor
    initial_prefix: torch.Tensor
    method: str
    loss_curves: dict[str, list[float]]
    training: dict[str, Any]
    generations: dict[str, int] = field(default_factory=dict)
    wall_time_s: float = 0.0
    main_process: bool = True  # under `accelerate launch`, only the main process reports

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "out": str(self.out),
            "method": self.method,
            "num_virtual_tokens": int(self.prefix.shape[0]),
            "token_dim": int(self.prefix.shape[1]),
            "steps": {k: len(v) for k, v in self.loss_curves.items()},
            "final_loss": {k: (v[-1] if v else None) for k, v in self.loss_curves.items()},
            "dpo_pairs": self.training.get("dpo_pairs"),
            "generations": self.generations,
            "wall_time_s": round(self.wall_time_s, 3),
        }


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic kernels where torch has them, restored afterwards (it is process-global)."""
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def _model_dims(config: Any) -> tuple[int, int, int, int]:
    hidden = int(getattr(config, "hidden_size", None) or config.n_embd)
    heads = int(getattr(config, "num_attention_heads", None) or config.n_head)
    layers = int(getattr(config, "num_hidden_layers", None) or config.n_layer)
    ctx = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 0
    return hidden, heads, layers, int(ctx)


def _check_base(base: Path) -> None:
    if not base.exists():
        raise NotFoundError(f"base model {base} does not exist", "pass a local transformers model directory with --base")
    if not (base / "config.json").is_file():
        raise InvalidInputError(f"base model {base} has no config.json", "pass a local transformers model directory with --base")


def _check_out(out: Path, resume: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file", "choose a directory")
    if out.is_dir() and any(out.iterdir()) and not resume:
        raise UsageError(f"--out {out} already exists and is not empty", "pass --resume to continue a run there, or choose another --out")


def _response_ids(tokenizer: Any, text: str, cap: int) -> tuple[int, ...]:
    """Re-tokenize a response for M: at most `cap` tokens, EOS appended when it fits."""
    ids = [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]][:cap]
    if len(ids) < cap and tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return tuple(ids)


def _fingerprint(path: Path) -> str:
    from patchkit.basemodel.fingerprint import fingerprint

    return fingerprint(path)


def _write_outputs(
    out: Path,
    prefix: torch.Tensor,
    base: Path,
    model_config: Any,
    cfg: TrainConfig,
    training: dict[str, Any],
) -> None:
    from safetensors.torch import save

    tensor = prefix.detach().to("cpu", torch.float32).contiguous()
    atomic_write_bytes(out / constants.TENSOR_FILE, save({constants.PREFIX_KEY: tensor}))
    _, heads, layers, _ = _model_dims(model_config)
    adapter = prompt_tuning_config(
        num_virtual_tokens=int(tensor.shape[0]),
        token_dim=int(tensor.shape[1]),
        base_id=str(base),
        revision=None,
        init=training["init"],
        heads=heads,
        layers=layers,
    )
    atomic_write_text(out / constants.ADAPTER_CONFIG_FILE, dumps_canonical(adapter))
    atomic_write_text(out / constants.TRAINING_FILE, dumps_canonical(training))


def _signature(cfg: TrainConfig, domain: str, digest: str, reference: str, data: list[DataRecord]) -> str:
    blob = json.dumps(
        {"config": cfg.training_signature(), "domain": domain, "base": digest, "reference": reference, "data": [d.to_dict() for d in data]},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def train_patch(
    base: str | Path,
    reference: str | Path | Reference | Sequence[Mapping[str, str]] | Mapping[str, str],
    prompts: str | Path | Sequence[str],
    *,
    domain: str,
    out: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    reference_description: str | None = None,
    scorer: Scorer | None = None,
    toxicity_scorer: str | None = None,
    stop_after: int | None = None,
    validation: str | Path | Sequence[Mapping[str, str] | ValidationRow] | None = None,
    **options: Any,
) -> TrainResult:
    """Train a policy patch on a frozen base model toward a reference policy M'.

    `reference` is a model directory, `system-prompt:"..."`, a JSONL path, or in-memory
    {prompt, response} rows (an optional "rejected" reply per row replaces M's greedy reply
    in the DPO pair); `prompts` is a JSONL/.txt path or a list of strings. `toxicity_scorer`
    picks the toxicity domain's pair scorer (default alt-profanity-check). Options are
    TrainConfig fields (stages, max_steps, lr, ...). `stop_after` (tests) raises StopTraining
    after that many optimizer steps in total, as if the process had been killed. `validation`
    ({"prompt", "expect": "refuse"|"answer"} rows or a JSONL) turns on validation-based
    checkpoint selection (see `selection`); it must be disjoint from the training prompts.

    The phases, in order: the data (checked before any model loads), the reference responses,
    the DPO pairs, the training loop, and the outputs.
    """
    started = time.perf_counter()
    if config is not None and options:
        raise UsageError("pass either config= or keyword options, not both")
    cfg = config if config is not None else make_config(**options)
    data = _read_data(base, reference, prompts, domain=domain, out=out, cfg=cfg, resume=resume, validation=validation)
    run = _Training(data, cfg, domain=domain, started=started)
    run.reference_responses(reference_description)
    run.keep_routed()
    run.base_pairs(scorer, toxicity_scorer)
    run.loop(resume=resume, stop_after=stop_after)
    return run.finish()


@dataclass
class _Data:
    """What training reads, checked before any model loads."""

    base_path: Path
    out_path: Path
    prompts: list[Prompt]
    records: list[DataRecord]
    reference: Reference
    validation: ValidationSet | None


def _read_data(base: str | Path, reference: Any, prompts: str | Path | Sequence[str], *, domain: str, out: str | Path,
               cfg: TrainConfig, resume: bool, validation: Any) -> _Data:
    validate_domain(domain)
    base_path = Path(base).expanduser()
    _check_base(base_path)
    base_path = base_path.resolve()
    out_path = Path(out).expanduser().resolve()
    if isinstance(prompts, str | Path):
        prompt_list, prompt_record = read_prompts(Path(prompts))
    else:
        prompt_list, prompt_record = prompts_from_list(list(prompts))
    ref = parse_reference(reference)
    records = [prompt_record]
    if isinstance(ref, ResponsesReference):
        for p in prompt_list:
            if p.text not in ref.responses:
                raise InvalidInputError(f"{p.source}: no reference response for this prompt in {ref.record.name}", "give a response for every training prompt")
        records.append(ref.record)
    val_set: ValidationSet | None = read_validation(validation) if validation is not None else None
    if val_set is not None:
        if domain != "harmfulness":
            raise UsageError("validation-based selection judges refusals: it needs --domain harmfulness")
        overlap = set(val_set.prompts) & {p.text for p in prompt_list}
        if overlap:
            raise InvalidInputError(f"{len(overlap)} validation prompt(s) are also training prompts, e.g. {sorted(overlap)[0][:60]!r}",
                                    "validation must be held out from training: use disjoint splits")
        records.append(val_set.record)
    elif cfg.select != "last" or cfg.eval_every is not None:
        raise UsageError("--select best (or a rule) and --eval-every need a validation set", "pass --validation FILE")
    if cfg.gate_recall is not None and domain != "harmfulness":
        raise UsageError("--gate-recall fits a gate on the reference's refusals: it needs --domain harmfulness",
                         "drop --gate-recall for this domain")
    if cfg.gate_recall is not None and not 0.0 < cfg.gate_recall <= 1.0:
        raise UsageError(f"--gate-recall must be in (0, 1], got {cfg.gate_recall}", "e.g. --gate-recall 0.99")
    if cfg.gated_by is not None:
        if domain != "harmfulness":
            raise UsageError("--gated-by routes by a refusal gate: it needs --domain harmfulness", "drop --gated-by for this domain")
        if cfg.gate_recall is not None:
            raise UsageError("--gated-by trains for a gate fitted beforehand; --gate-recall fits one afterwards",
                             "pass one of them")
        records.append(_gate_record(Path(cfg.gated_by).expanduser()))
    if "repr" in cfg.stages and domain != "harmfulness":
        raise UsageError("the repr stage trains on a refusal probe: it needs --domain harmfulness",
                         "drop repr from --stages for this domain")
    _check_out(out_path, resume)
    return _Data(base_path, out_path, prompt_list, records, ref, val_set)


def _gate_record(directory: Path) -> DataRecord:
    """The gate that --gated-by names, as a data entry (its file's digest): checked before any model
    loads, so a missing or half-written gate fails first; its shape and base are checked on load."""
    from patchkit._internal.files import read_regular
    from patchkit.artifact.gate import MAX_GATE_BYTES

    tensor, record = directory / constants.GATE_FILE, directory / constants.GATE_RECORD_FILE
    if not (tensor.is_file() and record.is_file()):
        raise InvalidInputError(f"--gated-by {directory} holds no gate ({constants.GATE_FILE} and {constants.GATE_RECORD_FILE})",
                                "fit one first: patchkit gate TRAIN_DIR --base M --labels FILE")
    raw = read_regular(tensor, MAX_GATE_BYTES, follow_symlinks=True)
    return DataRecord(constants.GATE_FILE, 1, hashlib.sha256(raw).hexdigest())


def _on_cpu(device: str | None) -> bool:
    """Whether accelerate should stay on the CPU; a GPU asked for must exist (one-line UsageError), and
    `cuda:N` becomes the current CUDA device, the one accelerate then places the run on."""
    if device is None:
        return not torch.cuda.is_available()
    dev = pick_device(device)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    return bool(dev.type == "cpu")


class _Training:
    """One training run: the frozen base, the prompts as M sees them, and the state the phases share."""

    def __init__(self, data: _Data, cfg: TrainConfig, *, domain: str, started: float) -> None:
        from accelerate import Accelerator

        self.data, self.cfg, self.domain, self.started = data, cfg, domain, started
        self.accelerator = Accelerator(cpu=_on_cpu(cfg.device))
        self.device = self.accelerator.device
        self.dtype = getattr(torch, cfg.dtype or "float32")
        self.base_model, self.tokenizer = load_model(data.base_path, device=self.device, dtype=self.dtype, what="base model")
        # Prompts as M sees them; refuse those the context cannot hold with prefix and response.
        self.formatted = [format_prompt(self.tokenizer, p.text) for p in data.prompts]
        self.prompt_ids = [tuple(encode_prompt(self.tokenizer, t)) for t in self.formatted]
        self._check_context()
        self.base_digest = _fingerprint(data.base_path)
        self.cache = GenerationCache()
        self.settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, dtype=str(self.dtype).replace("torch.", ""))
        self.chosen_text: list[str] = []
        self.ref_desc = ""
        self.sft_examples: list[Example] = []
        self.pairs: list[Pair] = []
        self.base_pair_list: list[Pair] = []
        self.pair_info: dict[str, Any] | None = None
        self.base_pair_info: dict[str, Any] | None = None
        self.scorer_name = "custom"
        self.score: Scorer | None = None
        self.over_refused: set[Pair] = set()  # kept pairs whose rejected reply refuses a benign prompt
        self.probe: Probe | None = None
        self.repr_info: dict[str, Any] | None = None
        self.gate_files: dict[str, bytes] | None = None  # --gated-by's gate files, once verified (vector first)
        self.gated_info: dict[str, Any] | None = None

    def _check_context(self) -> None:
        cfg = self.cfg
        _, _, _, ctx = _model_dims(self.base_model.config)
        if not ctx:
            return
        room = ctx - cfg.tokens - cfg.max_new_tokens
        if room < 1:
            raise InvalidInputError(
                f"--tokens {cfg.tokens} plus --max-new-tokens {cfg.max_new_tokens} leave no room in the context of {ctx} tokens",
                "use fewer virtual tokens or fewer new tokens",
            )
        for p, ids in zip(self.data.prompts, self.prompt_ids, strict=True):
            if len(ids) > room:
                raise InvalidInputError(
                    f"{p.source}: the prompt is {len(ids)} tokens, longer than the context allows "
                    f"({ctx} - {cfg.tokens} prefix - {cfg.max_new_tokens} new tokens = {room})",
                    "shorten or drop the prompt, or lower --tokens/--max-new-tokens",
                )

    def generate(self, model: Any, tok: Any, texts: list[str], digest: str, desc: str) -> list[str]:
        with self.accelerator.main_process_first():  # rank 0 fills the cache, the others read it
            return generate_cached(model, tok, texts, model_digest=digest, settings=self.settings,
                                   batch_size=self.cfg.generation_batch_size, cache=self.cache, desc=desc)

    # -- phase 2: the reference policy's responses (chosen) -----------------------------------------
    def reference_responses(self, description: str | None) -> None:
        ref, prompts, tok = self.data.reference, self.data.prompts, self.tokenizer
        if isinstance(ref, ResponsesReference):
            self.chosen_text = [ref.responses[p.text] for p in prompts]
            self.ref_desc = ref.describe()
        elif isinstance(ref, SystemPromptReference):
            sys_texts = [format_prompt(tok, p.text, system=ref.system_prompt) for p in prompts]
            self.chosen_text = self.generate(self.base_model, tok, sys_texts, self.base_digest, "reference (system prompt)")
            self.ref_desc = ref.describe()
        else:
            assert isinstance(ref, ModelReference)
            ref_digest = _fingerprint(ref.path)
            ref_model, ref_tok = load_model(ref.path, device=self.device, dtype=self.dtype, what="reference model")
            ref_texts = [format_prompt(ref_tok, p.text) for p in prompts]
            self.chosen_text = self.generate(ref_model, ref_tok, ref_texts, ref_digest, "reference (M')")
            del ref_model
            self.ref_desc = f"{ref.describe()} ({ref_digest})"
        if description:
            self.ref_desc = description
        self.sft_examples = [Example(ids, _response_ids(tok, t, self.cfg.max_new_tokens))
                             for ids, t in zip(self.prompt_ids, self.chosen_text, strict=True)]
        self.refuses: list[bool] = []
        if self.domain == "harmfulness":
            from patchkit.eval.refusal import classify

            # The reference's decision on each prompt: the repr stage's labels, the benign pairs' split.
            self.refuses = [classify(t).refused for t in self.chosen_text]

    def keep_routed(self) -> None:
        """--gated-by: leave out the benign training prompts (the reference answers them) and the
        validation answer rows that the gate does not route. Harmful prompts all stay: the reference
        refuses them, and whatever the gate routes of them must be refused."""
        if self.cfg.gated_by is None:
            return
        from patchkit._internal.files import read_regular
        from patchkit.artifact.gate import MAX_GATE_RECORD_BYTES, read_gate_source
        from patchkit.runtime.gate import Gate
        from patchkit.train.gate import routed_rows

        directory = Path(self.cfg.gated_by).expanduser()
        hidden, _, _, _ = _model_dims(self.base_model.config)
        found = read_gate_source(directory, hidden, base_digest=self.base_digest)
        assert found is not None  # _gate_record checked both files
        gate = Gate.from_parts(*found)
        # What the output will carry, read now and bounded: the vector as verified, and its record.
        self.gate_files = {constants.GATE_FILE: found[0].file_bytes(),
                           constants.GATE_RECORD_FILE: read_regular(directory / constants.GATE_RECORD_FILE,
                                                                    MAX_GATE_RECORD_BYTES, follow_symlinks=True)}
        pad = int(self.tokenizer.pad_token_id)
        benign = [i for i, r in enumerate(self.refuses) if not r]
        routed = routed_rows(self.base_model, [self.prompt_ids[i] for i in benign], pad, gate,
                             batch_size=self.cfg.generation_batch_size)
        drop = {i for i, k in zip(benign, routed, strict=True) if not k}
        keep = [i for i in range(len(self.prompt_ids)) if i not in drop]
        self.data.prompts = [self.data.prompts[i] for i in keep]
        self.formatted = [self.formatted[i] for i in keep]
        self.prompt_ids = [self.prompt_ids[i] for i in keep]
        self.chosen_text = [self.chosen_text[i] for i in keep]
        self.sft_examples = [self.sft_examples[i] for i in keep]
        self.refuses = [self.refuses[i] for i in keep]
        info: dict[str, Any] = {"gate_sha256": found[0].sha256, "benign_kept": len(benign) - len(drop), "benign_left_out": len(drop)}
        val = self.data.validation
        if val is not None:
            answers = [r for r in val.rows if r.expect == "answer"]
            ids = [tuple(encode_prompt(self.tokenizer, format_prompt(self.tokenizer, r.prompt))) for r in answers]
            keep_val = {r.prompt for r, k in zip(answers, routed_rows(self.base_model, ids, pad, gate,
                                                                      batch_size=self.cfg.generation_batch_size), strict=True) if k}
            if not keep_val:
                raise InvalidInputError(f"the gate in {directory} routes none of the validation set's {len(answers)} answer rows, "
                                        "so selection would weigh refusals alone",
                                        "add benign look-alikes the gate routes to the validation set, or drop --gated-by")
            rows = tuple(r for r in val.rows if r.expect == "refuse" or r.prompt in keep_val)
            self.data.validation = ValidationSet(rows, val.record)
            info |= {"validation_answer_kept": len(keep_val), "validation_answer_left_out": len(answers) - len(keep_val)}
        if not self.prompt_ids:
            raise InvalidInputError("no training prompt is left", "the reference must refuse some prompts, or the gate route some")
        self.gated_info = info

    # -- phase 3: DPO pairs -----------------------------------------------------------------------------
    def make_pairs(self, rejected_text: list[str], source: str) -> tuple[list[Pair], dict[str, Any]]:
        """Keep the pairs the scorer says M' clearly wins (and whose replies differ)."""
        from patchkit.eval.refusal import classify

        assert self.score is not None
        kept: list[Pair] = []
        dropped, by_kind = 0, {"refuse": 0, "answer": 0}
        for p, ex, c, r in zip(self.data.prompts, self.sft_examples, self.chosen_text, rejected_text, strict=True):
            rej = Example(ex.prompt_ids, _response_ids(self.tokenizer, r, self.cfg.max_new_tokens))
            if self.score(p.text, c, r) >= self.cfg.min_margin and rej.response_ids != ex.response_ids:
                kept.append(Pair(ex, rej))
                chosen_refuses = classify(c).refused
                by_kind["refuse" if chosen_refuses else "answer"] += 1
                if not chosen_refuses and classify(r).refused:
                    self.over_refused.add(kept[-1])
            else:
                dropped += 1
        return kept, {"kept": len(kept), "dropped": dropped, "chosen_refuses": by_kind["refuse"],
                      "chosen_answers": by_kind["answer"], "rejected_from": source}

    def base_pairs(self, scorer: Scorer | None, toxicity_scorer: str | None) -> None:
        """Rejected = M's own response (the on-policy pairs are built when DPO starts)."""
        cfg, prompts = self.cfg, self.data.prompts
        self.score = scorer
        if scorer is None and "dpo" in cfg.stages:
            self.scorer_name, self.score = scorer_for(self.domain, toxicity_scorer)
        elif scorer is None:
            self.scorer_name = "none (no dpo stage)"
        if "dpo" in cfg.stages and cfg.dpo_rejected in ("base", "both"):
            # A reference JSONL may name the rejected reply itself (e.g. the most toxic of n samples);
            # the other prompts take M's greedy reply.
            ref = self.data.reference
            given = ref.rejected if isinstance(ref, ResponsesReference) else {}
            need = [i for i, p in enumerate(prompts) if p.text not in given]
            generated = (self.generate(self.base_model, self.tokenizer, [self.formatted[i] for i in need], self.base_digest,
                                       "base responses (M)") if need else [])
            by_index = dict(zip(need, generated, strict=True))
            rejected_text = [given[p.text] if p.text in given else by_index[i] for i, p in enumerate(prompts)]
            source = "reference rows" if not need else ("base" if not given else "base and reference rows")
            self.pairs, self.base_pair_info = self.make_pairs(rejected_text, source)
            self.pair_info = {**self.base_pair_info, "scorer": self.scorer_name, "min_margin": cfg.min_margin}
            if not self.pairs and cfg.dpo_rejected == "base":
                raise InvalidInputError(
                    f"no DPO pairs left: all {self.base_pair_info['dropped']} were below the scorer margin "
                    f"{cfg.min_margin} ({self.scorer_name})",
                    "lower --min-margin, use a stronger reference, or run --stages sft",
                )
            if cfg.dpo_rejected == "base":
                self.add_benign_pairs()
        self.base_pair_list = list(self.pairs)

    def build_policy_pairs(self, prefix_now: torch.Tensor) -> None:
        """Rejected = the current (SFT-patched) policy's greedy replies; merged with the base pairs."""
        cfg = self.cfg
        with self.accelerator.main_process_first():
            replies = policy_replies(self.base_model, self.tokenizer, prefix_now, self.formatted, base_digest=self.base_digest,
                                     settings=self.settings, batch_size=cfg.generation_batch_size, cache=self.cache,
                                     desc="policy responses (SFT patch)")
        got, info = self.make_pairs(replies, "policy")
        seen = {(p.chosen, p.rejected) for p in self.base_pair_list}
        self.pairs = self.base_pair_list + [p for p in got if (p.chosen, p.rejected) not in seen]
        self.pair_info = {"kept": len(self.pairs), "scorer": self.scorer_name, "min_margin": cfg.min_margin,
                          "dpo_rejected": cfg.dpo_rejected, "policy": info,
                          **({"base": self.base_pair_info} if self.base_pair_info is not None else {})}
        self.add_benign_pairs()

    def add_benign_pairs(self) -> None:
        """Harmfulness: (the reference's answer > a refusal) pairs, `benign_ratio` per harmful pair."""
        if not self.refuses or self.cfg.benign_ratio <= 0 or self.pair_info is None:
            return
        added, info = benign_pairs(self.pairs, self.sft_examples, self.refuses, self.over_refused,
                                   ratio=self.cfg.benign_ratio, seed=self.cfg.seed)
        self.pairs = self.pairs + added
        self.pair_info = {**self.pair_info, "kept": len(self.pairs), "benign": info}

    def fit_repr_probe(self, model: Any) -> None:
        """The repr stage's probe, on M's own hidden states (no prefix): deterministic, so a resume refits it."""
        cfg = self.cfg
        _, _, layers, _ = _model_dims(self.base_model.config)
        layer = cfg.repr_layer if cfg.repr_layer is not None else default_layer(layers)
        if layer > layers:
            raise InvalidInputError(f"--repr-layer {layer} is past the model's {layers} layers",
                                    "leave --repr-layer unset for about 55% of the depth")
        pad_id = int(self.tokenizer.pad_token_id)
        self.repr_base = prompt_hidden(model, self.prompt_ids, pad_id, self.device, layer, use_prefix=False,
                                       batch_size=cfg.generation_batch_size)
        self.repr_labels = torch.tensor(self.refuses, dtype=torch.bool)
        self.probe = fit_probe(self.repr_base, self.repr_labels, layer=layer, l2=cfg.repr_l2, seed=cfg.seed)

    def fit_gate(self) -> tuple[torch.Tensor, dict[str, Any]]:
        """The routing gate, on the bare model's hidden states with the reference's decisions as labels."""
        from patchkit.train.gate import fit_gate_on

        cfg = self.cfg
        return fit_gate_on(self.base_model, self.prompt_ids, int(self.tokenizer.pad_token_id), self.refuses,
                           recall=cfg.gate_recall or 1.0, layer=cfg.repr_layer, seed=cfg.seed,
                           batch_size=cfg.generation_batch_size)

    def probe_summary(self, model: Any, prefix: torch.Tensor) -> dict[str, Any]:
        """The probe and its mean logit per class on the training prompts: M alone, then M + the prefix."""
        assert self.probe is not None
        probe, y = self.probe, self.repr_labels
        patched = prompt_hidden(model, self.prompt_ids, int(self.tokenizer.pad_token_id), self.device, probe.layer,
                                use_prefix=True, prefix=prefix, batch_size=self.cfg.generation_batch_size)

        def means(h: torch.Tensor) -> dict[str, float]:
            logit = probe.logits(h)
            return {"refuse": round(float(logit[y].mean()), 4), "answer": round(float(logit[~y].mean()), 4)}

        return {**probe.to_dict(), "margin": self.cfg.repr_margin, "keep": self.cfg.repr_keep,
                "mean_logit": {"base": means(self.repr_base), "patched": means(patched)}}

    # -- phase 4: the training loop ---------------------------------------------------------------------
    def loop(self, *, resume: bool, stop_after: int | None) -> None:
        """Run the stages in order; a resumed run skips what its checkpoint says is done and replays the rest."""
        cfg, val_set = self.cfg, self.data.validation
        self.signature = _signature(cfg, self.domain, self.base_digest, self.ref_desc, self.data.records)
        self.init_prefix, self.init_desc = start_prefix(self.base_model, self.tokenizer, cfg.init, cfg.tokens, cfg.seed)
        self._prepare_model()
        selection = parse_select(cfg.select)
        self.rule = selection if isinstance(selection, SelectionRule) else None
        self.state = TrainState.fresh(cfg.stages, Tracker(cfg.selection_weight, rule=self.rule) if val_set is not None else None)
        if resume and (prefix := self.state.resume(self.data.out_path, signature=self.signature)) is not None:
            with torch.no_grad():
                self.inner.prefix.copy_(prefix.to(self.inner.prefix.device))
        self.on_policy = "dpo" in cfg.stages and cfg.dpo_rejected in ("policy", "both")
        self.val_settings = GenerationSettings(max_new_tokens=cfg.validation_max_new_tokens, dtype=self.settings.dtype)
        self.val_texts = [format_prompt(self.tokenizer, p) for p in val_set.prompts] if val_set is not None else []
        if self.state.policy_prefix is not None:  # resumed inside DPO: rebuild the same pairs (cached replies)
            self.build_policy_pairs(self.state.policy_prefix)
        if "repr" in cfg.stages:
            self.fit_repr_probe(self.model)
        self.schedules = {
            "repr": schedule("repr", len(self.prompt_ids), cfg.repr_epochs, cfg.batch_size, cfg.seed, cfg.max_steps),
            "sft": schedule("sft", len(self.sft_examples), cfg.sft_epochs, cfg.batch_size, cfg.seed, cfg.max_steps),
            "dpo": self._dpo_schedule(),
        }
        self.shard = Shard(self.accelerator.process_index, self.accelerator.num_processes)
        self.world = self.shard.world
        self.cores = CoreHandover()
        with _deterministic():
            for i, stage in enumerate(cfg.stages):
                if stage == "dpo" and self.on_policy and self.state.policy_prefix is None:
                    self._sample_policy_pairs()
                if self.state.done[stage] >= len(self.schedules[stage]):
                    # A stage with nothing left ends here: judge it, as an uninterrupted run did at its end
                    # (once per step). A stage that ended before a later one started was judged then.
                    if not any(self.state.done[later] for later in cfg.stages[i + 1 :]):
                        self.validate(stage)
                    continue
                self._run_stage(stage, stop_after)

    def _prepare_model(self) -> None:
        """M with the trainable prefix, handed to accelerate."""
        model = PrefixLM(self.base_model, self.init_prefix)
        if self.cfg.gradient_checkpointing:
            self.base_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            self.base_model.train()  # checkpointing only runs in train mode; dropout stays off for determinism
            for m in self.base_model.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.eval()
        self.model = self.accelerator.prepare(model)
        self.inner: PrefixLM = self.accelerator.unwrap_model(self.model)
        # Chosen and rejected share the prompt: run it once through the KV cache (not with
        # checkpointing, which turns the cache off).
        self.shared = not self.cfg.gradient_checkpointing

    def _dpo_schedule(self) -> list[list[int]]:
        cfg = self.cfg
        return schedule("dpo", len(self.pairs), cfg.dpo_epochs, cfg.batch_size, cfg.seed, cfg.max_steps) if self.pairs else []

    def _take_free_cores(self) -> None:
        """Between steps: the cores a sibling process (the demo's background evaluation) has left."""
        self.cores.poll()

    def _sample_policy_pairs(self) -> None:
        """On-policy DPO: sample the rejected replies from the prefix as it is now, when DPO starts."""
        self._take_free_cores()
        self.state.policy_prefix = self.inner.prefix.detach().cpu().clone()
        self.build_policy_pairs(self.state.policy_prefix)
        self.schedules["dpo"] = self._dpo_schedule()

    def _run_stage(self, stage: str, stop_after: int | None) -> None:
        """The remaining steps of one stage, with its own optimizer (restored from the checkpoint mid-stage)."""
        from patchkit._internal.progress import Progress

        cfg, state, plan = self.cfg, self.state, self.schedules[stage]
        lr = {"dpo": cfg.dpo_lr, "repr": cfg.repr_lr}.get(stage) or cfg.lr
        optimizer = torch.optim.AdamW([self.inner.prefix], lr=lr, weight_decay=cfg.weight_decay)
        if state.optimizer is not None and state.done[stage] > 0:
            optimizer.load_state_dict(state.optimizer)
        state.optimizer = None
        self._take_free_cores()
        objective = self._objective(stage)
        bar = Progress(len(plan), f"{stage.upper()} training", unit="steps", initial=state.done[stage], leave=True,
                       disable=not self.accelerator.is_main_process)  # the other processes show nothing
        for idx in plan[state.done[stage] :]:
            self._take_free_cores()
            value = self._step(stage, optimizer, objective.loss(self.model, self.shard.rows(idx), state.done[stage]))
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            global_step = state.global_step
            if cfg.eval_every and global_step % cfg.eval_every == 0:
                self.validate(stage)
            if cfg.save_every and global_step % cfg.save_every == 0:
                self.save(stage, optimizer)
            if stop_after is not None and global_step >= stop_after:
                bar.close()
                raise StopTraining(f"stopped after {global_step} steps")
        bar.close()
        self.validate(stage)
        if cfg.save_every:
            self.save(stage, None if state.done[stage] >= len(plan) else optimizer)

    def _objective(self, stage: str) -> Objective:
        """The loss of `stage`; DPO scores its reference once, up front (it never changes during the stage)."""
        cfg, state, pad_id = self.cfg, self.state, int(self.tokenizer.pad_token_id)
        sft = SftObjective(self.sft_examples, pad_id, self.device)
        if stage == "sft":
            return sft
        if stage == "repr":
            assert self.probe is not None
            return ReprObjective(self.prompt_ids, self.repr_base, self.repr_labels, self.probe, pad_id, self.device,
                                 margin=cfg.repr_margin, keep=cfg.repr_keep)
        if state.ref_lp is None:
            state.ref_prefix = self.inner.prefix.detach().cpu().clone() if cfg.dpo_reference == "sft" else None
            state.ref_lp = reference_logprobs(self.inner, self.pairs, pad_id, self.device, state.ref_prefix,
                                              cfg.generation_batch_size, self.shared)
        regularizer = schedule("sft-reg", len(self.sft_examples), max(1, cfg.dpo_epochs) * 4, cfg.batch_size, cfg.seed, None)
        return DpoObjective(self.pairs, state.ref_lp, pad_id, self.device, cfg.beta, self.shared, sft, cfg.sft_weight,
                            regularizer, self.shard)

    def _step(self, stage: str, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
        """One optimizer step on the prefix; records the loss (averaged over the processes) and counts the step."""
        cfg, accelerator = self.cfg, self.accelerator
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_([self.inner.prefix], cfg.max_grad_norm)
        optimizer.step()
        value = float(accelerator.reduce(loss.detach(), reduction="mean"))
        if not math.isfinite(value):
            raise InvalidInputError(f"the {stage} loss became {value} at step {self.state.done[stage] + 1}",
                                    "lower --lr, or drop --bf16")
        self.state.curves[stage].append(value)
        self.state.done[stage] += 1
        return value

    def validate(self, stage: str) -> None:
        """Judge the validation set with the current prefix, once per global step (selection, see `selection`)."""
        tracker, val_set, cfg = self.state.tracker, self.data.validation, self.cfg
        if tracker is None or val_set is None:
            return
        step = self.state.global_step
        if tracker.points and tracker.points[-1].step == step:
            return
        if cfg.selection_scorer == "proxy":
            shares = self.proxy_shares(self.val_texts, self.inner.prefix)
            refusal, over = shares["refusal"], shares["over_refusal"]
            point = ValidationPoint(stage, step, refusal, over, 0.0, refusal - cfg.selection_weight * over,
                                    shares["refusal_p"], shares["over_refusal_p"])
        else:
            replies = self.validation_replies(self.inner.prefix)
            refusal, over, cav, sc = score_replies(val_set.rows, replies, cfg.selection_weight)
            point = ValidationPoint(stage, step, refusal, over, cav, sc)
        tracker.add(point, self.inner.prefix)

    def validation_replies(self, prefix: torch.Tensor) -> list[str]:
        """Greedy replies of base + `prefix` to the validation prompts (cached)."""
        return policy_replies(self.base_model, self.tokenizer, prefix, self.val_texts, base_digest=self.base_digest,
                              settings=self.val_settings, batch_size=self.cfg.generation_batch_size, cache=self.cache,
                              desc="validation")

    def proxy_scores(self, texts: list[str], prefix: torch.Tensor | None) -> list[ProxyScore]:
        return refusal_scores(self.base_model, self.tokenizer, texts, None if prefix is None else prefix.detach(),
                              batch_size=self.cfg.generation_batch_size)

    def proxy_shares(self, texts: list[str], prefix: torch.Tensor | None) -> dict[str, float]:
        assert self.data.validation is not None
        return proxy_shares([r.expect for r in self.data.validation.rows], self.proxy_scores(texts, prefix))

    def anchors(self) -> dict[str, dict[str, float]]:
        """The bare base and the base with the eval's fixed safety prompt, judged by the same scorer:
        where the chosen checkpoint stands against doing nothing and against a prompt."""
        from patchkit.eval.runner import DEFAULT_FIXED_PROMPT

        val_set = self.data.validation
        assert val_set is not None
        texts = {"base": self.val_texts,
                 "fixed_prompt": [format_prompt(self.tokenizer, p, system=DEFAULT_FIXED_PROMPT) for p in val_set.prompts]}
        out: dict[str, dict[str, float]] = {}
        for name, formatted in texts.items():
            if self.cfg.selection_scorer == "proxy":
                shares = self.proxy_shares(formatted, None)
                out[name] = {k: round(v, 4) for k, v in shares.items()}
            else:
                with self.accelerator.main_process_first():
                    replies = generate_cached(self.base_model, self.tokenizer, formatted, model_digest=self.base_digest,
                                              settings=self.val_settings, batch_size=self.cfg.generation_batch_size,
                                              cache=self.cache, desc=f"validation anchor ({name})")
                refusal, over, cav, _ = score_replies(val_set.rows, replies, self.cfg.selection_weight)
                out[name] = {"refusal": round(refusal, 4), "over_refusal": round(over, 4), "caveat": round(cav, 4)}
        return out

    def proxy_check(self, prefixes: list[torch.Tensor]) -> tuple[dict[str, Any], dict[str, float]]:
        """The proxy's decisions against the detector on generated replies, for each prefix (rows pooled),
        and the generation-judged shares of the first (the selected one)."""
        val_set = self.data.validation
        assert val_set is not None
        proxy: list[bool] = []
        generated: list[bool] = []
        judged: dict[str, float] = {}
        for i, prefix in enumerate(prefixes):
            proxy += [s.greedy for s in self.proxy_scores(self.val_texts, prefix)]
            replies = self.validation_replies(prefix)
            generated += [judge(r)[0] for r in replies]
            if i == 0:
                refusal, over, cav, _ = score_replies(val_set.rows, replies, self.cfg.selection_weight)
                judged = {"refusal": round(refusal, 4), "over_refusal": round(over, 4), "caveat": round(cav, 4)}
        return agreement(proxy, generated, self.cfg.validation_max_new_tokens), judged

    def save(self, stage: str, optimizer: torch.optim.Optimizer | None) -> None:
        """A checkpoint of the run (the main process writes it; the others wait)."""
        if self.accelerator.is_main_process:
            self.state.save(self.data.out_path, signature=self.signature, prefix=self.inner.prefix, stage=stage,
                            optimizer=optimizer)
        self.accelerator.wait_for_everyone()

    # -- phase 5: the outputs ----------------------------------------------------------------------------
    def selection_block(self, tracker: Tracker, val_set: ValidationSet, kept: torch.Tensor, last: torch.Tensor) -> dict[str, Any]:
        """training.json's "validation": the curve, the chosen point, the anchors and (proxy) its check
        of `kept` (the prefix the run writes) and, when it differs, of the `last` one."""
        cfg = self.cfg
        best = tracker.best
        chosen = best if cfg.select != "last" and best is not None else tracker.points[-1] if tracker.points else None
        block: dict[str, Any] = {
            "select": cfg.select, "rule": str(self.rule) if self.rule is not None else None, "weight": cfg.selection_weight,
            "scorer": cfg.selection_scorer, "data": val_set.record.to_dict(),
            "refuse_rows": sum(r.expect == "refuse" for r in val_set.rows),
            "answer_rows": sum(r.expect == "answer" for r in val_set.rows),
            "max_new_tokens": cfg.validation_max_new_tokens, "detector": "refusal-markers-v2+caveat-v1",
            "points": [p.to_dict() for p in tracker.points],
            "selected": chosen.to_dict() if chosen is not None else None,
            "constraint_met": None,
            "anchors": self.anchors(),
        }
        if cfg.selection_scorer == "proxy":
            block["proxy"] = {"name": PROXY_NAME, "openings": list(REFUSAL_OPENINGS), "decision": DECISION}
        if self.rule is not None and chosen is not None:
            met = self.rule.feasible(chosen)
            block["constraint_met"] = met
            if not met and self.accelerator.is_main_process:
                sys.stderr.write(f"patchkit: WARNING: no validation point meets {self.rule}; kept step {chosen.step}, "
                                 f"the closest (violation {self.rule.violation(chosen):.4f})\n")
        if cfg.selection_scorer == "proxy" and chosen is not None:
            prefixes = [kept] if torch.equal(kept, last) else [kept, last]
            block["proxy_agreement"], block["selected_generation"] = self.proxy_check(prefixes)
            block["proxy_agreement"]["checkpoints"] = ["selected"] + (["last"] if len(prefixes) > 1 else [])
        return block

    def finish(self) -> TrainResult:
        cfg, val_set, tracker = self.cfg, self.data.validation, self.state.tracker
        prefix = self.inner.prefix.detach().cpu().clone()
        selection: dict[str, Any] | None = None
        if tracker is not None and val_set is not None:
            last = prefix
            if cfg.select != "last" and tracker.best_prefix is not None:
                prefix = tracker.best_prefix.clone()
            selection = self.selection_block(tracker, val_set, prefix, last)
        method = "+".join(cfg.stages)
        gate = self.fit_gate() if cfg.gate_recall is not None else None
        wall = time.perf_counter() - self.started
        training: dict[str, Any] = {
            "method": method,
            "reference": self.ref_desc,
            # The probe goes in the hyperparameters too: `patchkit build` carries them into the manifest.
            "hyperparameters": {**cfg.hyperparameters(), "init": self.init_desc, "scorer": self.scorer_name,
                                **({"repr_probe": self.probe.to_dict()} if self.probe is not None else {})},
            "seed": cfg.seed,
            "data": [d.to_dict() for d in self.data.records],
            "patchkit_version": constants.PATCHKIT_VERSION,
            "init": self.init_desc,
            "domain": self.domain,
            "loss_curves": self.state.curves,
            "steps": {s: len(self.schedules[s]) for s in cfg.stages},
            "dpo_skipped": ("no on-policy pairs: the SFT policy already agreed with the reference on every training prompt"
                            if "dpo" in cfg.stages and not self.pairs else None),
            "dpo_pairs": self.pair_info,
            "repr": self.probe_summary(self.model, prefix) if self.probe is not None else None,
            "gate": gate[1] if gate is not None else None,
            "gated_by": self.gated_info,
            "validation": selection,
            "extensions": [ON_POLICY_NOTE] if self.on_policy else [],
            "base_model": {"path": str(self.data.base_path), "digest": self.base_digest},
            "generations": {"cached": self.cache.hits, "generated": self.cache.misses},
            "resumed_from": self.state.resumed_from,
            "processes": self.world,
            "wall_time_s": round(wall, 3),
        }
        if self.accelerator.is_main_process:
            self.data.out_path.mkdir(parents=True, exist_ok=True)
            _write_outputs(self.data.out_path, prefix, self.data.base_path, self.base_model.config, cfg, training)
            from patchkit.train.gate import remove_gate, write_gate

            if self.gate_files is not None:  # the gate it trained for: the vector first, the record names its digest
                for name, data in self.gate_files.items():
                    atomic_write_bytes(self.data.out_path / name, data)
            elif gate is None:
                remove_gate(self.data.out_path)
            else:
                write_gate(self.data.out_path, gate[0], gate[1], base_digest=self.base_digest)
        self.accelerator.wait_for_everyone()
        return TrainResult(self.data.out_path, prefix, self.init_prefix, method, self.state.curves, training, training["generations"],
                           wall, self.accelerator.is_main_process)


def load_prompts(prompts: str | Path | Sequence[str]) -> list[Prompt]:
    """Prompts from a file or a list, validated as `train_patch` does."""
    if isinstance(prompts, str | Path):
        return read_prompts(Path(prompts))[0]
    return prompts_from_list(list(prompts))[0]

