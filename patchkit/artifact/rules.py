"""Policy on what a patch promises: rules checked against its *signed* manifest, after verification.

`patchkit verify … --require RULE` (repeatable), and a `policy.toml` kept beside the trust
store (`require = [...]`), which applies whenever that trust store does. A patch that verifies
but breaks a rule fails with its own exit code (9) and a one-line reason.

Rules:
- `[DOMAIN.]METRIC OP NUMBER`, OP one of >= > <= < == !=: the manifest's metric of that name
  must satisfy it (every entry of that name, when several datasets report it). With a DOMAIN
  prefix (`harmfulness.refusal_rate>=0.9`), the rule applies to patches of that domain only;
  without one, to every patch. A metric the manifest does not state fails the rule.
- `FIELD in {a,b}`, `FIELD not in {a,b}`, `FIELD == v`, `FIELD != v`, for FIELD one of
  domain, name, version, publisher, license, base_model.id.

A `--require` rule is also a demand on the set verified (the patch, or every patch a lock pins):
`harmfulness.refusal_rate>=0.9` fails (exit 9) when no patch of domain harmfulness is there to
meet it, instead of passing because it applies to none. policy.toml rules stay conditional (a
policy for several domains applies to whichever patches a lock holds).
"""

from __future__ import annotations

import math
import operator
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.files import read_regular
from patchkit.errors import InvalidInputError, NotFoundError, PolicyError, UsageError
from patchkit.manifest import DOMAIN_RE, Manifest

POLICY_FILE = "policy.toml"
MAX_POLICY_BYTES = 256 * 1024
MAX_RULES = 256
FIELDS: dict[str, Callable[[Manifest], str]] = {
    "domain": lambda m: m.domain,
    "name": lambda m: m.name,
    "version": lambda m: m.version,
    "publisher": lambda m: m.publisher,
    "license": lambda m: m.license,
    "base_model.id": lambda m: m.base_model.id,
}
_NUMERIC = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq, "!=": operator.ne}
_SET_RE = re.compile(r"^(?P<field>[a-z_.]+)\s+(?P<neg>not\s+)?in\s+\{(?P<items>[^{}]*)\}$")
_CMP_RE = re.compile(r"^(?P<lhs>[A-Za-z0-9_.:-]+)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<rhs>\S.*)$")
_METRIC_RE = re.compile(r"^[A-Za-z0-9_:-]+$")
HINT = ("the patch verifies, but its signed manifest does not promise what the policy requires; "
        "choose another version, or ask the publisher")
UNMET_HINT = ("pin a patch of that domain that states the metric, or drop the rule "
              "(a rule for several domains' patches belongs in policy.toml, where it applies only where it can)")
SYNTAX = "rules look like 'harmfulness.refusal_rate>=0.9' or 'domain in {harmfulness,toxicity}'"


@dataclass(frozen=True)
class Rule:
    text: str
    subject: str  # a FIELDS key, or a metric name
    op: str  # a _NUMERIC key for a metric; "in" or "not in" for a field
    number: float | None = None
    values: frozenset[str] = frozenset()
    domain: str | None = None  # a metric rule for patches of this domain only
    required: bool = False  # from --require: some patch of the set verified must meet it (`Policy.unmet`)

    def failure(self, m: Manifest) -> str | None:
        """Why `m` breaks this rule; None when it holds (or does not apply to `m`'s domain)."""
        if self.subject in FIELDS and self.number is None:
            value = FIELDS[self.subject](m)
            return None if (value in self.values) == (self.op == "in") else f"{self.subject} is {value!r}"
        if self.domain is not None and m.domain != self.domain:
            return None
        found = [x for x in m.metrics if x.name == self.subject]
        if not found:
            return f"its signed manifest states no metric {self.subject}"
        assert self.number is not None
        compare = _NUMERIC[self.op]
        # A non-finite value never meets a rule (every `>=` holds for infinity); manifests refuse them, this is the backstop.
        bad = [x for x in found if not math.isfinite(x.value) or not compare(x.value, self.number)]
        if not bad:
            return None
        x = bad[0]
        where = ", ".join(p for p in (f"n={x.n}" if x.n is not None else "", x.dataset or "") if p)
        return f"{self.subject} is {x.value:.4g}" + (f" ({where})" if where else "")


def parse_rule(text: str) -> Rule:
    """One rule; a malformed one is a usage error (exit 2), never silently dropped."""
    raw = " ".join(str(text).split())
    if not raw or len(raw) > 500:
        raise UsageError(f"empty or overlong policy rule {raw[:60]!r}", SYNTAX)
    if m := _SET_RE.match(raw):
        fld = m.group("field")
        if fld not in FIELDS:
            raise UsageError(f"policy rule {raw!r}: unknown field {fld!r}", f"fields are {', '.join(FIELDS)}")
        items = frozenset(v.strip().strip("'\"") for v in m.group("items").split(",") if v.strip())
        if not items:
            raise UsageError(f"policy rule {raw!r} lists no values", SYNTAX)
        return Rule(raw, fld, "not in" if m.group("neg") else "in", values=items)
    m = _CMP_RE.match(raw)
    if not m:
        raise UsageError(f"cannot read policy rule {raw!r}", SYNTAX)
    lhs, op, rhs = m.group("lhs"), m.group("op"), m.group("rhs").strip()
    if lhs in FIELDS:
        if op not in ("==", "!="):
            raise UsageError(f"policy rule {raw!r}: {lhs} is compared with == or != (or `in {{…}}`)", SYNTAX)
        return Rule(raw, lhs, "in" if op == "==" else "not in", values=frozenset({rhs.strip("'\"")}))
    domain, dot, metric = lhs.rpartition(".")
    if dot and not DOMAIN_RE.match(domain):
        raise UsageError(f"policy rule {raw!r}: {domain!r} is not a domain",
                         "qualify a metric with toxicity, bias, harmfulness or custom:<word> (e.g. harmfulness.refusal_rate), "
                         "or leave the prefix off to require it of every patch")
    if not _METRIC_RE.match(metric):
        raise UsageError(f"policy rule {raw!r}: {metric!r} is not a metric name", SYNTAX)
    try:
        number = float(rhs)
    except ValueError:
        raise UsageError(f"policy rule {raw!r}: {rhs!r} is not a number", SYNTAX) from None
    if not math.isfinite(number):
        raise UsageError(f"policy rule {raw!r}: the bound must be a finite number", SYNTAX)
    return Rule(raw, metric, op, number=number, domain=domain or None)


def load_policy_file(path: Path) -> list[Rule]:
    try:
        text = read_regular(path, MAX_POLICY_BYTES, what=f"policy file {path}").decode("utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        raise NotFoundError(f"policy file {path} does not exist", "create it, or drop --policy") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInputError(f"policy file {path} is not valid TOML: {exc}", 'write require = ["harmfulness.refusal_rate>=0.9"]') from None
    unknown = sorted(set(data) - {"require", "version"})
    if unknown:
        raise InvalidInputError(f"policy file {path}: unknown key(s) {', '.join(unknown)}", "a policy file holds `require = [...]`")
    rules = data.get("require", [])
    if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules) or len(rules) > MAX_RULES:
        raise InvalidInputError(f"policy file {path}: `require` must be a list of rule strings", SYNTAX)
    try:
        return [parse_rule(r) for r in rules]
    except UsageError as exc:
        raise InvalidInputError(f"policy file {path}: {exc.message}", exc.hint) from None


@dataclass
class Policy:
    rules: list[Rule] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # the policy file, and/or "--require"

    def __bool__(self) -> bool:
        return bool(self.rules)

    def check(self, manifest: Manifest) -> None:
        """PolicyError (exit 9) naming the first rule the signed manifest breaks."""
        for rule in self.rules:
            why = rule.failure(manifest)
            if why is not None:
                raise PolicyError(f"{manifest.name}@{manifest.version} does not meet the policy `{rule.text}`: {why}", HINT)

    def unmet(self, manifests: list[Manifest], *, what: str = "pinned patch") -> list[str]:
        """The `--require` rules no manifest of the set can meet, each as a one-line reason.

        Per-patch checks (`check`) skip a domain rule for patches of other domains; over the whole
        set, a rule that applies to none of them is a promise nobody made.
        """
        out: list[str] = []
        for rule in self.rules:
            if not rule.required:
                continue
            if not manifests:
                out.append(f"no {what} is there to meet `{rule.text}`")
            elif rule.domain is not None and not any(m.domain == rule.domain for m in manifests):
                out.append(f"no {what} has a metric {rule.domain}.{rule.subject} (none is of domain {rule.domain}); "
                           f"`{rule.text}` cannot be met")
        return out

    def check_set(self, manifests: list[Manifest], *, what: str = "patch") -> None:
        """PolicyError (exit 9) for the first `--require` rule the set cannot meet."""
        for why in self.unmet(manifests, what=what):
            raise PolicyError(why, UNMET_HINT)

    def to_dict(self) -> dict[str, Any]:
        return {"rules": [r.text for r in self.rules], "sources": self.sources}


def default_policy_file(trust: Path | None) -> Path:
    """`policy.toml` beside the trust store in use."""
    store = Path(trust) if trust is not None else constants.default_trust_file()
    return store.parent / POLICY_FILE


def policy_for(*, trust: Path | str | None, requires: list[str] | None = None, policy_file: Path | str | None = None,
               beside: bool = True) -> Policy:
    """The rules that apply: `--policy FILE` (else policy.toml beside the trust store, if there), plus `--require`.

    `beside=False` is for a trust store held only in memory: no file is beside it.
    """
    out = Policy()
    path = Path(policy_file) if policy_file is not None else default_policy_file(Path(trust) if trust is not None else None)
    if policy_file is not None or (beside and path.is_file()):
        out.rules += load_policy_file(path)
        out.sources.append(str(path))
    if requires:
        out.rules += [replace(parse_rule(r), required=True) for r in requires]
        out.sources.append("--require")
    return out


__all__ = ["POLICY_FILE", "Policy", "Rule", "default_policy_file", "load_policy_file", "parse_rule", "policy_for"]
