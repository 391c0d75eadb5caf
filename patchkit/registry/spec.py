"""`NS/NAME@SPEC`: parsing version specs and picking the version a spec resolves to.

The rules (design brief, section 4):
- `1.2.0` (or `==1.2.0`) is an exact pin; `1.2` is the newest 1.2.x; `1` the newest 1.x;
- `^1.2`, `~1.2.3`, `>=1.0,<2` are ranges; `latest`, `*` and a bare name mean the newest;
- a pre-release counts only when the spec names a pre-release of the same MAJOR.MINOR.PATCH
  (npm's rule), so `>=1.0` never drifts onto `2.0.0-rc.1`;
- a yanked version is skipped unless pinned exactly (PEP 592).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from patchkit.errors import InvalidInputError
from patchkit.manifest import validate_name
from patchkit.version import Comparator, Version, is_semver, parse_range

_NUM = r"(?:0|[1-9]\d*)"
_PARTIAL_RE = re.compile(rf"^(?P<nums>{_NUM}(?:\.{_NUM}){{0,2}})(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$")
SPEC_HINT = "use 1.2.0, 1.2, 1, ^1.2, ~1.2.3, >=1.0,<2 or latest"
LATEST_WORDS = frozenset({"", "latest", "*"})


SpecKind = Literal["latest", "exact", "range"]


@dataclass(frozen=True)
class Spec:
    """A parsed version spec."""

    text: str
    kind: SpecKind
    comparators: tuple[Comparator, ...] = ()
    exact: Version | None = None

    @property
    def pinned(self) -> bool:
        return self.kind == "exact"

    def _allows_prerelease(self, v: Version) -> bool:
        core = (v.major, v.minor, v.patch)
        return any(c.version.pre and (c.version.major, c.version.minor, c.version.patch) == core for c in self.comparators)

    def matches(self, v: Version) -> bool:
        """Whether `v` satisfies the spec, yanks aside."""
        if self.kind == "exact":
            # Build metadata does not order versions, but a pin that names it picks that build only.
            return v == self.exact and (self.exact is None or not self.exact.build or v.build == self.exact.build)
        if self.kind == "latest":
            return not v.is_prerelease
        if v.is_prerelease and not self._allows_prerelease(v):
            return False
        return all(c.matches(v) for c in self.comparators)

    def __str__(self) -> str:
        return self.text or "latest"


def _bad(text: str) -> InvalidInputError:
    return InvalidInputError(f"invalid version spec {text!r}", SPEC_HINT)


def _partial(text: str, whole: str) -> tuple[list[int], tuple[str, ...]]:
    m = _PARTIAL_RE.match(text)
    if not m:
        raise _bad(whole)
    nums = [int(n) for n in m.group("nums").split(".")]
    pre = tuple(m.group("pre").split(".")) if m.group("pre") else ()
    if pre and len(nums) != 3:
        raise _bad(whole)
    return nums, pre


def _range(lo: Version, hi: Version) -> tuple[Comparator, ...]:
    # `<X.Y.0-0` would be npm's trick; the pre-release rule already keeps X.Y.0-rc out.
    return (Comparator(">=", lo), Comparator("<", hi))


def parse_spec(text: str) -> Spec:
    """Parse a version spec; InvalidInputError (exit 6) for anything else."""
    raw = text
    text = text.strip()
    if text.lower() in LATEST_WORDS:
        return Spec(raw, "latest")
    if text.startswith("==") and is_semver(text[2:].strip()):
        return Spec(raw, "exact", exact=Version.parse(text[2:].strip()))
    if is_semver(text):
        return Spec(raw, "exact", exact=Version.parse(text))
    if text[0] in "^~":
        nums, pre = _partial(text[1:], raw)
        major, minor, patch = [*nums, 0, 0][:3]
        lo = Version(major, minor, patch, pre)
        if text[0] == "~":
            hi = Version(major + 1, 0, 0) if len(nums) == 1 else Version(major, minor + 1, 0)
        elif major > 0 or len(nums) == 1:
            hi = Version(major + 1, 0, 0)
        elif minor > 0 or len(nums) == 2:
            hi = Version(0, minor + 1, 0)
        else:
            hi = Version(0, 0, patch + 1)
        return Spec(raw, "range", _range(lo, hi))
    if text[0].isdigit():
        nums, pre = _partial(text, raw)
        if len(nums) == 3:  # a full version that is_semver refused (e.g. odd build metadata)
            raise _bad(raw)
        if len(nums) == 1:
            return Spec(raw, "range", _range(Version(nums[0], 0, 0), Version(nums[0] + 1, 0, 0)))
        return Spec(raw, "range", _range(Version(nums[0], nums[1], 0), Version(nums[0], nums[1] + 1, 0)))
    if text[0] in "<>=!":
        try:
            return Spec(raw, "range", parse_range(text))
        except InvalidInputError:
            raise _bad(raw) from None
    raise _bad(raw)


def parse_ref(ref: str) -> tuple[str, Spec]:
    """`NS/NAME[@SPEC]` -> (name, spec)."""
    name, _, spec = ref.strip().partition("@")
    return validate_name(name), parse_spec(spec)


def select(spec: Spec, candidates: Iterable[tuple[Version, bool]]) -> Version | None:
    """The newest candidate `(version, yanked)` the spec picks, or None."""
    best: Version | None = None
    for v, yanked in candidates:
        if yanked and not spec.pinned:
            continue
        if spec.matches(v) and (best is None or v > best):
            best = v
    return best


__all__ = ["Spec", "parse_ref", "parse_spec", "select"]
