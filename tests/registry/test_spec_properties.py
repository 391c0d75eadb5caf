"""Property tests: the spec parser and resolver against a small reference model of the rules."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from patchkit.errors import InvalidInputError
from patchkit.registry.spec import parse_spec, select
from patchkit.version import Version

PRES = ("", "alpha", "rc.1", "rc.2")  # ordered as SemVer orders them (and as plain strings do)

Core = tuple[int, int, int]


@st.composite
def pools(draw: st.DrawFn) -> list[tuple[Core, str, bool]]:
    """Published versions: (core, pre-release or "", yanked)."""
    n = st.integers(0, 3)
    items = draw(st.lists(st.tuples(st.tuples(n, n, n), st.sampled_from(PRES), st.booleans()), max_size=14))
    seen: dict[tuple[Core, str], tuple[Core, str, bool]] = {}
    for core, pre, yanked in items:
        seen.setdefault((core, pre), (core, pre, yanked))
    return list(seen.values())


def vtext(core: Core, pre: str) -> str:
    return ".".join(map(str, core)) + (f"-{pre}" if pre else "")


def ref_key(core: Core, pre: str) -> tuple[Core, int, str]:
    return (core, 0 if pre else 1, pre)  # a release sorts after its pre-releases


def reference(kind: str, a: Core, b: Core, pre: str, pool: list[tuple[Core, str, bool]]) -> str | None:
    """The rules, written independently of the implementation."""
    def ok(core: Core, p: str, yanked: bool) -> bool:
        if kind == "exact":
            return (core, p) == (a, pre)
        if yanked:
            return False
        if p and not (kind in ("caret", "tilde") and pre and core == a):
            return False  # pre-releases only when the spec names one of the same core
        lo_ok = ref_key(core, p) >= ref_key(a, pre)
        if kind == "latest":
            return True
        if kind == "major":
            return core[0] == a[0]
        if kind == "minor":
            return core[:2] == a[:2]
        if kind == "caret":
            if a[0] > 0:
                return lo_ok and core[0] == a[0]
            if a[1] > 0:
                return lo_ok and core[:2] == (0, a[1])
            return lo_ok and core == a
        if kind == "tilde":
            return lo_ok and core[:2] == a[:2]
        if kind == "range":
            return core >= a and core < b
        raise AssertionError(kind)

    matches = [(core, p) for core, p, y in pool if ok(core, p, y)]
    if not matches:
        return None
    core, p = max(matches, key=lambda m: ref_key(*m))
    return vtext(core, p)


def spec_text(kind: str, a: Core, b: Core, pre: str) -> str:
    return {
        "exact": vtext(a, pre),
        "latest": "latest",
        "major": str(a[0]),
        "minor": f"{a[0]}.{a[1]}",
        "caret": "^" + vtext(a, pre),
        "tilde": "~" + vtext(a, pre),
        "range": f">={vtext(a, '')},<{vtext(b, '')}",
    }[kind]


core_st = st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3))


@settings(max_examples=400, deadline=None)
@given(pool=pools(), kind=st.sampled_from(["exact", "latest", "major", "minor", "caret", "tilde", "range"]),
       a=core_st, b=core_st, pre=st.sampled_from(PRES))
def test_resolver_matches_reference(pool: list[tuple[Core, str, bool]], kind: str, a: Core, b: Core, pre: str) -> None:
    if kind in ("major", "minor", "range", "latest"):
        pre = ""
    spec = parse_spec(spec_text(kind, a, b, pre))
    got = select(spec, [(Version.parse(vtext(c, p)), y) for c, p, y in pool])
    assert (str(got) if got is not None else None) == reference(kind, a, b, pre, pool)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.^~<>=!,-+*latesrcv abc", max_size=20))
def test_parser_accepts_or_refuses_cleanly(text: str) -> None:
    try:
        spec = parse_spec(text)
    except InvalidInputError as exc:
        assert exc.exit_code == 6 and "spec" in exc.message
        return
    assert spec.kind in ("exact", "latest", "range")
    select(spec, [(Version(1, 0, 0), False), (Version(2, 0, 0, ("rc", "1")), False)])


@settings(max_examples=200, deadline=None)
@given(pool=pools(), a=core_st, pre=st.sampled_from(PRES))
def test_yanked_only_by_exact_pin(pool: list[tuple[Core, str, bool]], a: Core, pre: str) -> None:
    versions = [(Version.parse(vtext(c, p)), y) for c, p, y in pool]
    yanked = {v for v, y in versions if y}
    for text in ("latest", str(a[0]), f"{a[0]}.{a[1]}", "^" + vtext(a, pre), "~" + vtext(a, pre), ">=0.0.0"):
        got = select(parse_spec(text), versions)
        assert got is None or got not in yanked
    exact = select(parse_spec(vtext(a, pre)), versions)
    present = Version.parse(vtext(a, pre)) in {v for v, _ in versions}
    assert (exact is not None) == present
