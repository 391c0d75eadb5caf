"""serve.toml: defaults, and one clear error for each kind of bad file."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchkit.errors import InvalidInputError, NotFoundError
from patchkit.serve.config import ServeConfig, load_config


def test_defaults_and_a_full_file(tmp_path: Path) -> None:
    assert load_config(None) == ServeConfig()
    p = tmp_path / "serve.toml"
    p.write_text('schema_version = "1.0"\nname = "smollm2"\nprefix_cache_size = 4\n'
                 '[limits]\nmax_tokens = 512\nmax_batch = 4\nmax_queue = 0\n'
                 '[aliases]\nsafe = ["acme/harm@1", "acme/tox@^1"]\nplain = []\n')
    c = load_config(p)
    assert c.name == "smollm2" and c.limits.max_tokens == 512 and c.limits.max_queue == 0
    assert c.aliases == {"safe": ["acme/harm@1", "acme/tox@^1"], "plain": []} and c.prefix_cache_size == 4


@pytest.mark.parametrize("text", [
    "[limits]\nmax_tokne = 5\n",  # a typo is refused, not ignored
    "[limits]\nmax_batch = 0\n",
    "[limits]\nmax_tokens = 10\ndefault_max_tokens = 20\n",
    "[limits]\nmax_connections = 71\n",  # below max_batch + max_queue: the queue could never fill
    "[limits]\nbody_timeout_s = 0\n",
    "ready_interval_s = -1\n",
    '[aliases]\n"a+b" = []\n',
    '[aliases]\n"ns/x" = []\n',
    'schema_version = "2.0"\n',
    "name = 'has space'\n",
    "not toml = = =\n",
])
def test_bad_files(tmp_path: Path, text: str) -> None:
    p = tmp_path / "serve.toml"
    p.write_text(text)
    with pytest.raises(InvalidInputError) as info:
        load_config(p)
    assert str(p) in info.value.message and info.value.hint


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_config(tmp_path / "nope.toml")
