"""`patchkit serve` honours key revocations through the same verification path as the CLI: a patch whose
signing key was revoked is refused (403 `patch_revoked`; the publisher's reason in the server's log), also after
it was served, once its set is verified again (`recheck_s`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from patchkit.registry.keylog import revoke, rotate
from patchkit.registry.resign import resign
from patchkit.serve.config import ServeConfig
from patchkit.serve.errors import APIError
from patchkit.serve.patches import PatchResolver
from patchkit.trust.store import TrustStore
from tests.helpers import make_signed_patch, pk, write_fake_model


def test_serve_refuses_a_patch_signed_by_a_revoked_key(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'registry'}"
    model = write_fake_model(tmp_path / "model")
    art, keys = make_signed_patch(tmp_path, base_model=model)
    assert pk("publish", art, "--key", keys / "private.pem", "--registry", url).returncode == 0
    resolver = PatchResolver(model, ServeConfig(recheck_s=600), name="tiny", trust=TrustStore.load(), registry=url)
    served = resolver.resolve("tiny+acme/tox@1")
    assert [p.ref for p in served.patches] == ["acme/tox@1.0.0"]

    assert pk("keys", "generate", "--out", tmp_path / "new").returncode == 0
    rotate(keys / "private.pem", tmp_path / "new" / "private.pem", ["acme/*"], registry=url)
    revoke(keys / "public.pem", "build server compromised", ["acme"], signer_path=tmp_path / "new" / "private.pem",
           registry=url)
    assert resolver.cached("tiny+acme/tox@1") is served  # within recheck_s the verified set is served as is
    resolver.config.recheck_s = 0.05  # as if the recheck interval had passed
    time.sleep(0.1)
    assert resolver.cached("tiny+acme/tox@1") is None  # then it must verify again
    with pytest.raises(APIError) as info:
        resolver.resolve("tiny+acme/tox@1")
    assert (info.value.status, info.value.code) == (403, "patch_revoked")
    assert info.value.message == "model 'tiny+acme/tox@1': a patch is signed by a key its publisher revoked"
    assert info.value.detail is not None and '"build server compromised"' in info.value.detail  # for the log
    with pytest.raises(APIError):  # a refusal is not cached: checked again, refused again
        resolver.resolve("tiny+acme/tox@1.0.0")

    resign("acme/tox@1.0.0", tmp_path / "new" / "private.pem", registry=url)  # the vendor's remedy
    again = resolver.resolve("tiny+acme/tox@1")
    assert again.patches[0].digest == served.patches[0].digest and again.patches[0].signer.endswith("(rotated)")
