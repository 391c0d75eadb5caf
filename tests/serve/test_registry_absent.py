"""A server whose registry does not exist answers 502 registry_unavailable for a ref, the HTTP form
of the CLI's exit 8 (issue 22, item 13), not 404 "no such model"."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchkit.serve.config import ServeConfig
from patchkit.serve.errors import APIError
from patchkit.serve.patches import PatchResolver
from patchkit.trust.store import TrustStore
from tests.helpers import write_fake_model


@pytest.mark.parametrize("registry", [None, "file:///no/such/registry"])
def test_an_absent_registry_is_a_registry_failure(tmp_path: Path, registry: str | None) -> None:
    r = PatchResolver(write_fake_model(tmp_path / "model"), ServeConfig(), name="tiny", trust=TrustStore.load(),
                      registry=registry)
    with pytest.raises(APIError) as info:
        r.resolve("tiny+acme/tox@1")
    assert (info.value.status, info.value.code) == (502, "registry_unavailable"), info.value.message
    assert r.known() == []
