from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def pk_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own PATCHKIT_HOME, and no progress bars or network."""
    home = tmp_path / "pkhome"
    home.mkdir()
    monkeypatch.setenv("PATCHKIT_HOME", str(home))
    monkeypatch.setenv("PATCHKIT_NO_PROGRESS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", os.environ.get("PK_TEST_HF_OFFLINE", "1"))
    monkeypatch.delenv("PATCHKIT_REGISTRY", raising=False)
    monkeypatch.delenv("PATCHKIT_DEBUG", raising=False)
    yield home


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Build (once per session) tiny models by architecture; tests must not modify them."""
    from tests.tiny import make_tiny_model

    cache: dict[tuple[str, int], Path] = {}

    def get(arch: str = "llama", seed: int = 0) -> Path:
        key = (arch, seed)
        if key not in cache:
            cache[key] = make_tiny_model(tmp_path_factory.mktemp(f"tiny-{arch}-{seed}"), arch=arch, seed=seed)
        return cache[key]

    return get


@pytest.fixture
def tiny_model(tiny_model_factory, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """A private copy of the tiny Llama model, safe to modify."""
    import shutil

    dst = tmp_path / "model"
    shutil.copytree(tiny_model_factory("llama"), dst)
    return dst
