from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.runtime._support import Kit, home
from tests.serve._support import SERVE_POSITIONS, make_serve_model


@pytest.fixture(scope="session")
def serve_kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    root = tmp_path_factory.mktemp("serve-kit")
    with home(root / "home"):
        return Kit.create(root / "kit")


@pytest.fixture(scope="session")
def serve_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with a long context, so a test can keep a request generating for seconds."""
    return make_serve_model(tmp_path_factory.mktemp("serve-model") / "tiny", positions=SERVE_POSITIONS)


@pytest.fixture(scope="session")
def serve_patches(serve_kit: Kit, serve_model: Path) -> Callable[[str], Path]:
    """Signed artifacts for the serve model, by name, built once (different lengths on purpose)."""
    specs = {"acme/a": (11, 4), "acme/b": (12, 7), "acme/c": (13, 3)}
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            seed, tokens = specs[name]
            built[name] = serve_kit.patch(serve_model, name=name, seed=seed, tokens=tokens)
        return built[name]

    return get
