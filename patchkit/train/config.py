"""Training settings: one dataclass, validated once, recorded whole in training.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from patchkit.errors import InvalidInputError, UsageError
from patchkit.lm.loading import check_device_name, check_dtype_name

# Every stage, in the order they run; `DEFAULT_STAGES` is the paper's method. "repr" (a
# representation objective on a refusal probe, see `patchkit.train.representation`) runs first when chosen.
STAGES = ("repr", "sft", "dpo")
DEFAULT_STAGES = ("sft", "dpo")
STAGES_HINT = "use --stages with one or more of repr, sft, dpo (comma-separated), e.g. sft,dpo or repr,sft,dpo"
DPO_REFERENCES = ("sft", "none")
DPO_REJECTED = ("base", "policy", "both")
SELECT = ("last", "best")  # or a constraint rule, see `patchkit.train.selection.parse_rule`
SELECTION_SCORERS = ("generate", "proxy")
_T = TypeVar("_T")

# The paper found a safety instruction far better than random as the starting prefix.
DEFAULT_INIT_TEXT = (
    "You are a helpful, honest and harmless assistant. If a request could cause harm, "
    "refuse it politely and briefly explain why; otherwise answer helpfully."
)
DEFAULT_INIT = f'text:"{DEFAULT_INIT_TEXT}"'


@dataclass(frozen=True)
class Flag:
    """How a setting shows on `patchkit train`, declared beside the setting so the CLI cannot drift
    from it: the flag is `--` and the name with dashes, `help` its help text, and `shown` what
    `--help` prints as the default when the real one is too long (the flag then passes nothing
    unless it is given)."""

    help: str | None = None
    shown: str | None = None


def setting(default: _T, help: str | None = None, *, shown: str | None = None) -> _T:
    """A TrainConfig field that `patchkit train` offers as a flag."""
    return field(default=default, metadata={"flag": Flag(help, shown)})


@dataclass(frozen=True)
class TrainConfig:
    """Every hyperparameter of a run; all of it lands in training.json.

    The fields declared with `setting` are `patchkit train`'s flags (`patchkit.cli.train` reads
    them from here: name, type, default and help).
    """

    stages: tuple[str, ...] = setting(DEFAULT_STAGES, "Comma-separated stages of repr, sft, dpo (run in that order), "
                                      "e.g. sft,dpo or repr,sft,dpo. repr: a refusal-probe objective (harmfulness).")
    repr_epochs: int = setting(1)
    sft_epochs: int = setting(1)
    dpo_epochs: int = setting(1)
    max_steps: int | None = setting(None, "Cap on optimizer steps for each stage.")
    batch_size: int = setting(4)
    lr: float = setting(5e-3)
    dpo_lr: float | None = setting(None, "Learning rate of the DPO stage (default: --lr).")  # None: the same as lr
    # Weight of an SFT (NLL) term on the reference responses during DPO, over all training
    # prompts, benign ones included: without it DPO sees only the pairs M' wins (the harmful
    # prompts) and can drift towards refusing everything. 0 is the paper's pure DPO.
    sft_weight: float = setting(0.0, "Weight of an SFT term on the reference responses during DPO (0: pure DPO).")
    beta: float = setting(0.1, "DPO beta.")
    min_margin: float = setting(0.5, "Drop DPO pairs whose scorer margin (chosen - rejected) is below this.")
    dpo_reference: str = setting("sft", "DPO reference policy: sft (frozen prefix after SFT) or none (bare base).")
    # Where DPO's rejected replies come from: "base" (M, the paper), "policy" (the SFT-patched
    # policy's own greedy replies: on-policy pairs, beyond the paper) or "both".
    dpo_rejected: str = setting("base", "DPO rejected replies: base (M, the paper), policy (the SFT-patched policy's "
                                "own replies: on-policy pairs) or both.")
    # Harmfulness: benign DPO pairs (the reference's own answer chosen over a refusal) per harmful
    # pair, for the prompts the reference answers. Without them DPO only ever rewards refusing.
    # 0 turns them off (the paper's pairs only).
    benign_ratio: float = setting(0.0, "Harmfulness: benign DPO pairs (reference answer > a refusal) per harmful pair; "
                                  "0: none.")
    # The "repr" stage: a refusal probe on M's hidden state at the assistant position of layer
    # `repr_layer` (None: about 55% of the depth), L2-regularised logistic regression with strength
    # `repr_l2`; the prefix is trained to put harmful prompts `repr_margin` probe-logits past the
    # boundary on the refusal side and benign ones as far on the other, plus `repr_keep` times the
    # relative change of the hidden state orthogonal to the probe direction.
    repr_layer: int | None = setting(None, "repr: the probe's layer (default about 55% of the depth).")
    repr_l2: float = setting(1e-2, "repr: L2 strength of the logistic probe.")
    repr_margin: float = setting(4.0, "repr: probe-logit margin to push each prompt past the boundary.")
    repr_keep: float = setting(1.0, "repr: weight of keeping the hidden state still off the probe direction.")
    repr_lr: float | None = setting(None, "Learning rate of the repr stage (default: --lr).")  # None: the same as lr
    # Validation-based selection (needs a validation set): judge the policy's greedy replies
    # every `eval_every` steps and at the end of each stage; "best" keeps the best-scoring prefix.
    # A routing gate (harmfulness; `patchkit.train.gate`): fitted after training on the bare model's
    # hidden state at the repr layer, with the reference's decisions as labels; the prefix then
    # applies only to prompts the gate routes to it. The value is the share of the prompts the
    # reference refuses that must be routed (out of fold). None: no gate.
    gate_recall: float | None = setting(None, "Harmfulness: fit a routing gate so the patch applies only to prompts a "
                                        "probe on M's hidden state routes to it; the share of refused training prompts "
                                        "to route, e.g. 0.99 (default: no gate).")
    # Training for a gate fitted beforehand (`patchkit gate`): a gated prefix only sees the prompts
    # its gate routes, so the benign training prompts and validation answer rows the gate does not
    # route are left out, and the output carries that gate. Recorded by the gate's digest (a data
    # entry), never by its path.
    gated_by: str | None = setting(None, "Harmfulness: train for the gate in this directory (a `patchkit gate` output): "
                                   "benign training prompts and validation answer rows it does not route are left out, "
                                   "and the output carries the gate.")
    eval_every: int | None = setting(None, "Judge the validation set every N steps.")
    select: str = setting("last", "last, best (the best validation score), or a rule: 'refusal s.t. over_refusal<=0.05' "
                          "(highest refusal within the budget; constraints on refusal, over_refusal, caveat joined by 'and').")
    # How a validation point is judged: "generate" (greedy replies + the refusal detector) or
    # "proxy" (one forward pass: the probability of a refusal opening; checked against generation at the end).
    selection_scorer: str = setting("generate", "Validation scorer: generate (greedy replies + detector) or proxy "
                                    "(probability of a refusal opening, one pass; agreement with generation recorded).")
    selection_weight: float = setting(1.0, "Score = refusal - weight x (over-refusal + caveats) on validation.")
    validation_max_new_tokens: int = setting(32)
    tokens: int = setting(50, "Number of virtual tokens.")
    init: str = setting(DEFAULT_INIT, 'text:"...", random, vocab, or prefix:PATH (continue from a trained prefix: '
                        'a training output, patch directory or .safetensors file).', shown="text:<a safety instruction>")
    max_new_tokens: int = setting(64, "Generation (and response) length cap.")
    generation_batch_size: int = setting(8)
    seed: int = setting(0)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    save_every: int | None = setting(None, "Write a checkpoint every N steps.")
    bf16: bool = setting(False, "Run the frozen base in bfloat16 (the same as --dtype bfloat16).")
    # The frozen base's dtype (the prefix itself always trains in float32); None: float32, or
    # bfloat16 under `bf16`, which stays as the older spelling of `dtype="bfloat16"`.
    dtype: str | None = setting(None, "float32, bfloat16 or float16 for the frozen base (the prefix trains in float32).",
                                shown="float32")
    # Where to train: None lets accelerate pick (cuda if available, else cpu).
    device: str | None = setting(None, "cpu, cuda or cuda:N (default: cuda if available).")
    gradient_checkpointing: bool = setting(False)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # One spelling per run: `bf16=True` and `dtype="bfloat16"` are the same setting, so the
        # recorded hyperparameters and the resume signature cannot tell them apart.
        if self.dtype == "bfloat16" or (self.bf16 and self.dtype is None):
            object.__setattr__(self, "dtype", "bfloat16")
            object.__setattr__(self, "bf16", True)
        elif self.dtype is None:
            object.__setattr__(self, "dtype", "float32")

    def hyperparameters(self) -> dict[str, Any]:
        """The recorded hyperparameters (JSON-ready)."""
        out = dataclasses.asdict(self)
        out["stages"] = list(self.stages)
        out.pop("extra")
        out.pop("gated_by")  # a path: the gate enters training.json's data list by its digest instead
        out.update(self.extra)
        out["optimizer"] = "adamw"
        out["generation"] = {"do_sample": False, "max_new_tokens": self.max_new_tokens}
        return out

    def training_signature(self) -> dict[str, Any]:
        """What a checkpoint must agree with to be resumed (save_every may change)."""
        sig = self.hyperparameters()
        sig.pop("save_every", None)
        # The gate is fitted after training, on the bare model: it does not change the prefix, so a
        # finished run resumed with another --gate-recall only refits the gate.
        sig.pop("gate_recall", None)
        # The device does not change what is trained (a run may resume on another machine). The
        # dtype does, but float32 and bfloat16 are already told apart by `bf16`, the key older
        # checkpoints were signed with; only float16 adds a key, so their signatures still match.
        sig.pop("device", None)
        if sig.get("dtype") != "float16":
            sig.pop("dtype", None)
        return sig


def parse_stages(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    parts = [p.strip().lower() for p in value.split(",")] if isinstance(value, str) else [str(p).strip().lower() for p in value]
    parts = [p for p in parts if p]
    if not parts:
        raise InvalidInputError("no training stage given", STAGES_HINT)
    for p in parts:
        if p not in STAGES:
            raise InvalidInputError(f"unknown stage {p!r} (known: {', '.join(STAGES)})", STAGES_HINT)
    if len(set(parts)) != len(parts):
        raise InvalidInputError(f"stage listed twice in {','.join(parts)!r}", STAGES_HINT)
    return tuple(sorted(parts, key=STAGES.index))


def canonical_select(value: str) -> str:
    """`last`, `best`, or a constraint rule in its canonical spelling (a bad rule is a usage error)."""
    from patchkit.train.selection import parse_select

    return str(parse_select(value))


def validate_init(init: str) -> str:
    if init in ("random", "vocab"):
        return init
    if init.startswith("text:"):
        text = unquote(init[len("text:") :])
        if not text.strip():
            raise InvalidInputError("--init text: needs a non-empty text", 'use --init text:"You are a safe assistant."')
        return f'text:"{text}"'
    if init.startswith("prefix:"):
        # Another run's prefix as the start: a second on-policy round, or the next version of a
        # patch trained on from the last. The file is read (and checked) when training starts.
        where = unquote(init[len("prefix:") :])
        if not where.strip():
            raise InvalidInputError("--init prefix: needs a path", "use --init prefix:./train-out (a training output or patch directory)")
        return f"prefix:{Path(where).expanduser().resolve()}"
    raise InvalidInputError(f"unknown --init {init!r}", 'use text:"...", random, vocab or prefix:PATH')


def unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def make_config(**kwargs: Any) -> TrainConfig:
    """Build and validate a TrainConfig; bad values are invalid input (exit 6)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise InvalidInputError(f"unknown training option(s): {', '.join(unknown)}", f"known: {', '.join(sorted(names))}")
    if "stages" in kwargs:
        kwargs["stages"] = parse_stages(kwargs["stages"])
    if "init" in kwargs:
        kwargs["init"] = validate_init(kwargs["init"])
    if isinstance(kwargs.get("select"), str):
        kwargs["select"] = canonical_select(kwargs["select"])
    cfg = TrainConfig(**kwargs)
    check_config(cfg)
    return cfg


def check_config(cfg: TrainConfig) -> None:
    if cfg.tokens <= 0:
        raise InvalidInputError(f"--tokens must be at least 1 (got {cfg.tokens})", "a patch needs virtual tokens; 50 is usual")
    for name in ("repr_epochs", "sft_epochs", "dpo_epochs", "batch_size", "max_new_tokens", "generation_batch_size"):
        if getattr(cfg, name) < 1:
            raise InvalidInputError(f"--{name.replace('_', '-')} must be at least 1 (got {getattr(cfg, name)})")
    if cfg.max_steps is not None and cfg.max_steps < 1:
        raise InvalidInputError(f"--max-steps must be at least 1 (got {cfg.max_steps})")
    if cfg.save_every is not None and cfg.save_every < 1:
        raise InvalidInputError(f"--save-every must be at least 1 (got {cfg.save_every})")
    if not cfg.lr > 0:
        raise InvalidInputError(f"--lr must be positive (got {cfg.lr})")
    if cfg.dpo_lr is not None and not cfg.dpo_lr > 0:
        raise InvalidInputError(f"--dpo-lr must be positive (got {cfg.dpo_lr})")
    if cfg.repr_lr is not None and not cfg.repr_lr > 0:
        raise InvalidInputError(f"--repr-lr must be positive (got {cfg.repr_lr})")
    if not cfg.benign_ratio >= 0:
        raise InvalidInputError(f"--benign-ratio must be zero or positive (got {cfg.benign_ratio})")
    if cfg.repr_layer is not None and cfg.repr_layer < 1:
        raise InvalidInputError(f"--repr-layer must be at least 1 (got {cfg.repr_layer})", "layer 1 is the first block's output")
    if not cfg.repr_l2 >= 0:
        raise InvalidInputError(f"--repr-l2 must be zero or positive (got {cfg.repr_l2})")
    if not cfg.repr_margin >= 0:
        raise InvalidInputError(f"--repr-margin must be zero or positive (got {cfg.repr_margin})")
    if not cfg.repr_keep >= 0:
        raise InvalidInputError(f"--repr-keep must be zero or positive (got {cfg.repr_keep})")
    if not cfg.sft_weight >= 0:
        raise InvalidInputError(f"--sft-weight must be zero or positive (got {cfg.sft_weight})")
    if not cfg.beta > 0:
        raise InvalidInputError(f"--beta must be positive (got {cfg.beta})")
    if cfg.dpo_reference not in DPO_REFERENCES:
        raise InvalidInputError(f"unknown --dpo-reference {cfg.dpo_reference!r}", "use sft or none")
    if cfg.dpo_rejected not in DPO_REJECTED:
        raise InvalidInputError(f"unknown --dpo-rejected {cfg.dpo_rejected!r}", "use base, policy or both")
    canonical_select(cfg.select)
    if cfg.selection_scorer not in SELECTION_SCORERS:
        raise InvalidInputError(f"unknown --selection-scorer {cfg.selection_scorer!r}", "use generate or proxy")
    if cfg.eval_every is not None and cfg.eval_every < 1:
        raise InvalidInputError(f"--eval-every must be at least 1 (got {cfg.eval_every})")
    if cfg.validation_max_new_tokens < 1:
        raise InvalidInputError(f"--validation-max-new-tokens must be at least 1 (got {cfg.validation_max_new_tokens})")
    if not cfg.selection_weight >= 0:
        raise InvalidInputError(f"--selection-weight must be zero or positive (got {cfg.selection_weight})")
    parse_stages(cfg.stages)
    check_device_name(cfg.device)
    check_dtype_name(cfg.dtype)
    if cfg.bf16 and cfg.dtype != "bfloat16":
        raise UsageError(f"--bf16 and --dtype {cfg.dtype} disagree", "pass one of them: --bf16 is --dtype bfloat16")
