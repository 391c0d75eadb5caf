"""`$PATCHKIT_HOME/config.toml`: the few settings a user sets once (`patchkit config set`).

Environment variables win over the file (`PATCHKIT_NAMESPACE`, `PATCHKIT_REGISTRY`), so CI can
override a developer's defaults without editing anything.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable

from patchkit import constants
from patchkit._internal.files import atomic_write_text, file_lock, lock_for, read_regular
from patchkit.errors import InvalidInputError, UsageError

MAX_CONFIG_BYTES = 64 * 1024
_NS_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def _check_namespace(value: str) -> str:
    if not _NS_RE.match(value) or ".." in value:
        raise UsageError(f"invalid namespace {value!r}", "a namespace is lower case: letters, digits, '.', '_', '-', e.g. acme")
    return value


def _check_registry(value: str) -> str:
    if value not in ("local", "hf://") and not value.startswith("file:///"):
        raise UsageError(f"invalid registry {value!r}", "use local, hf:// or file:///abs/path")
    return value


KEYS: dict[str, tuple[str, Callable[[str], str]]] = {
    "namespace": ("where an un-namespaced name such as llama3-tox@1.2 resolves (PATCHKIT_NAMESPACE overrides)",
                  _check_namespace),
    "registry": ("the default registry: local, hf:// or file:///path (PATCHKIT_REGISTRY overrides)", _check_registry),
}


def read_config() -> dict[str, str]:
    path = constants.config_file()
    try:
        text = read_regular(path, MAX_CONFIG_BYTES, what=f"config file {path}").decode("utf-8")
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError:
        raise InvalidInputError(f"config file {path} is not UTF-8 text", "fix it, or remove it and use `patchkit config set`") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(f"config file {path} is not valid TOML: {exc}",
                                "fix it, or remove it and use `patchkit config set`") from None
    out: dict[str, str] = {}
    for key, value in raw.items():
        if key not in KEYS or not isinstance(value, str):
            raise InvalidInputError(f"config file {path}: unknown or malformed setting {key!r}",
                                    f"known settings: {', '.join(KEYS)} (strings)")
        out[key] = KEYS[key][1](value)
    return out


def get_value(key: str) -> str | None:
    return read_config().get(key)


def _key(key: str) -> str:
    if key not in KEYS:
        raise UsageError(f"unknown setting {key!r}", f"known settings: {', '.join(KEYS)}")
    return key


def _write(values: dict[str, str]) -> None:
    lines = ["# patchkit settings; `patchkit config set KEY VALUE` edits this file"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in sorted(values.items())]
    atomic_write_text(constants.config_file(), "\n".join(lines) + "\n", mode=0o644)


def set_value(key: str, value: str) -> dict[str, str]:
    checked = KEYS[_key(key)][1](value)
    with file_lock(lock_for(constants.config_file())):
        values = read_config()
        values[key] = checked
        _write(values)
    return values


def unset_value(key: str) -> dict[str, str]:
    _key(key)
    with file_lock(lock_for(constants.config_file())):
        values = read_config()
        values.pop(key, None)
        _write(values)
    return values


__all__ = ["KEYS", "get_value", "read_config", "set_value", "unset_value"]
