from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.runtime._support import Kit, home


@pytest.fixture(scope="session")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    root = tmp_path_factory.mktemp("runtime-kit")
    with home(root / "home"):
        return Kit.create(root / "kit")


@pytest.fixture(scope="session")
def arch_patch(kit: Kit, tiny_model_factory, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Path, Path]]:  # type: ignore[no-untyped-def]
    """Per architecture: (model_dir, signed artifact for it, its PEFT export), built once."""
    from patchkit.runtime.export import export_peft

    cache: dict[str, tuple[Path, Path, Path]] = {}

    def get(arch: str) -> tuple[Path, Path, Path]:
        if arch not in cache:
            model_dir = tiny_model_factory(arch)
            with home(tmp_path_factory.mktemp(f"home-{arch}")):
                art = kit.patch(model_dir, name=f"acme/{arch}-tox", seed=7, tokens=5)
                peft_dir = tmp_path_factory.mktemp(f"peft-{arch}") / "adapter"
                export_peft(art, peft_dir, trust=kit.trust)
            cache[arch] = (model_dir, art, peft_dir)
        return cache[arch]

    return get
