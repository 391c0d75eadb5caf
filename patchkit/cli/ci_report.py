"""CI reports: a `verify --lock --json` result as a Markdown table and as GitHub Actions outputs.

The GitHub Action (`action.yml`) runs `patchkit verify --lock … --json`, saves what it
printed, and hands it to `patchkit ci summary`, which appends the table to
`$GITHUB_STEP_SUMMARY` and the outputs to `$GITHUB_OUTPUT`. The result is read as data, never
run: every cell is escaped, and every output uses a random heredoc delimiter, so a hostile
reason string cannot add a row, a column or an output.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from patchkit._internal.files import read_regular
from patchkit._internal.jsonio import dumps_line
from patchkit.errors import InvalidInputError

MAX_RESULT_BYTES = 16 * 1024 * 1024
MAX_CELL = 300


def read_result(path: Path) -> dict[str, Any]:
    """What `verify --json` printed (its last JSON line); an empty or missing file is a failed run."""
    try:
        text = read_regular(path, MAX_RESULT_BYTES, what=f"verify result {path}").decode("utf-8", "replace")
    except FileNotFoundError:
        text = ""
    for line in reversed(text.strip().splitlines()):
        try:
            raw = json.loads(line)
        except ValueError:
            continue
        if isinstance(raw, dict):
            return raw
    return {"ok": False, "reason": "patchkit verify printed no result", "patches": []}


def _cell(value: Any) -> str:
    text = " ".join(str(value if value is not None else "").split())
    if len(text) > MAX_CELL:
        text = text[: MAX_CELL - 1] + "…"
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;") or "-"


def _row_result(p: dict[str, Any]) -> str:
    if p.get("ok"):
        return "✅ verified" + (" (yanked)" if p.get("yanked") else "")
    return f"❌ {p.get('error') or 'failed'} (exit {p.get('exit_code')}): {p.get('reason') or ''}"


def markdown(result: dict[str, Any], *, exit_code: int | None = None) -> str:
    """The step summary: one line of verdict, then patch, version, signer, digest and result per pin."""
    ok = bool(result.get("ok")) and not exit_code
    lock = result.get("lock") or ""
    head = f"### patchkit verify --lock {_cell(lock)}: {'OK' if ok else 'FAILED'}"
    lines = [head, ""]
    patches = result.get("patches")
    if isinstance(patches, list) and patches:
        lines += ["| patch | version | signer | digest | result |", "| --- | --- | --- | --- | --- |"]
        for p in patches:
            if not isinstance(p, dict):
                continue
            digest = str(p.get("digest") or "")
            shown = f"`{_cell(digest[:23])}…`" if len(digest) > 23 else _cell(digest)
            lines.append(f"| {_cell(p.get('name'))} | {_cell(p.get('version'))} | {_cell(p.get('signer'))} | {shown} "
                         f"| {_cell(_row_result(p))} |")
        lines.append("")
    elif not ok:
        lines += [f"patchkit could not check the lock: {_cell(result.get('reason'))}"
                  + (f" (hint: {_cell(result.get('hint'))})" if result.get("hint") else ""), ""]
    policy = result.get("policy")
    if isinstance(policy, dict) and policy.get("rules"):
        lines += ["Policy: " + ", ".join(f"`{_cell(r)}`" for r in policy["rules"]), ""]
    for w in result.get("warnings") or []:
        lines.append(f"> ⚠️ {_cell(w)}")
    return "\n".join(lines).rstrip() + "\n\n"


def outputs(result: dict[str, Any], *, exit_code: int | None = None) -> dict[str, str]:
    patches = [p for p in result.get("patches") or [] if isinstance(p, dict)]
    code = exit_code if exit_code is not None else int(result.get("exit_code") or (0 if result.get("ok") else 1))
    return {
        "ok": "true" if result.get("ok") and not code else "false",
        "exit-code": str(code),
        "verified": str(sum(1 for p in patches if p.get("ok"))),
        "failed": str(sum(1 for p in patches if not p.get("ok"))),
        "patches": dumps_line([{k: p.get(k) for k in ("name", "version", "signer", "digest", "ok", "reason")}
                               for p in patches], separators=(",", ":")),
    }


def append_outputs(path: Path, values: dict[str, str]) -> None:
    """`name<<DELIM`-style lines (GitHub's multiline syntax), with a delimiter no value contains."""
    with open(path, "a", encoding="utf-8") as fh:
        for name, value in values.items():
            delim = f"pk_{secrets.token_hex(8)}"
            if delim in value:
                raise InvalidInputError("an output value contains its delimiter", "run again")
            fh.write(f"{name}<<{delim}\n{value}\n{delim}\n")


def append_summary(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


__all__ = ["append_outputs", "append_summary", "markdown", "outputs", "read_result"]
