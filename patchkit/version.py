"""SemVer 2.0: parsing, precedence, and comparator ranges (`>=1.0,<2`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from patchkit.errors import InvalidInputError

_NUM = r"0|[1-9]\d*"
_IDENT = r"(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)"
SEMVER_RE = re.compile(
    rf"^(?P<major>{_NUM})\.(?P<minor>{_NUM})\.(?P<patch>{_NUM})"
    rf"(?:-(?P<pre>{_IDENT}(?:\.{_IDENT})*))?"
    r"(?:\+(?P<build>[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    pre: tuple[str, ...] = ()
    build: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Version:
        m = SEMVER_RE.match(text.strip()) if isinstance(text, str) else None
        if not m:
            raise InvalidInputError(f"{text!r} is not a SemVer 2.0 version", "use MAJOR.MINOR.PATCH, e.g. 1.2.0 or 1.2.0-rc.1")
        pre = tuple(m.group("pre").split(".")) if m.group("pre") else ()
        build = tuple(m.group("build").split(".")) if m.group("build") else ()
        return cls(int(m.group("major")), int(m.group("minor")), int(m.group("patch")), pre, build)

    @property
    def is_prerelease(self) -> bool:
        return bool(self.pre)

    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]:
        # A release sorts after its pre-releases; numeric identifiers sort before alphanumeric.
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.pre)
        return (self.major, self.minor, self.patch, 0 if self.pre else 1, pre)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        s = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            s += "-" + ".".join(self.pre)
        if self.build:
            s += "+" + ".".join(self.build)
        return s


def is_semver(text: str) -> bool:
    return bool(SEMVER_RE.match(text))


_OPS = ("==", "!=", ">=", "<=", ">", "<")


@dataclass(frozen=True)
class Comparator:
    op: str
    version: Version

    def matches(self, v: Version) -> bool:
        o = self.version
        return {
            "==": v == o, "!=": v != o, ">=": v >= o, "<=": v <= o, ">": v > o, "<": v < o,
        }[self.op]


def _loose(text: str) -> Version:
    """`1` -> 1.0.0 and `1.2` -> 1.2.0, for range bounds."""
    parts = text.split("-", 1)
    nums = parts[0].split(".")
    if 1 <= len(nums) < 3 and all(n.isdigit() for n in nums):
        text = ".".join([*nums, *["0"] * (3 - len(nums))]) + (f"-{parts[1]}" if len(parts) > 1 else "")
    return Version.parse(text)


def parse_range(text: str) -> tuple[Comparator, ...]:
    """Parse `>=1.0,<2` style ranges; every comparator must hold."""
    out: list[Comparator] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            raise InvalidInputError(f"empty comparator in range {text!r}", "write ranges like >=1.0,<2")
        for op in _OPS:
            if part.startswith(op):
                out.append(Comparator(op, _loose(part[len(op):].strip())))
                break
        else:
            raise InvalidInputError(f"{part!r} in range {text!r} has no operator", "write ranges like >=1.0,<2")
    return tuple(out)


def in_range(version: Version, comparators: tuple[Comparator, ...]) -> bool:
    return all(c.matches(version) for c in comparators)
