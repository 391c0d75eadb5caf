"""The `model` field grammar and the resolver's refusals (torch-free)."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchkit import constants
from patchkit.serve.config import ServeConfig
from patchkit.serve.errors import APIError
from patchkit.serve.patches import PatchResolver
from patchkit.trust.store import TrustStore
from tests.helpers import write_fake_model
from tests.runtime._support import Kit


def _resolver(tmp_path: Path, **aliases: list[str]) -> PatchResolver:
    model = write_fake_model(tmp_path / "model")
    return PatchResolver(model, ServeConfig(aliases=aliases), name="tiny", trust=TrustStore.load(), registry=None)


def test_model_field_grammar(tmp_path: Path) -> None:
    r = _resolver(tmp_path, safe=["acme/harm@1", "acme/tox@^1"], plain=[])
    assert r.parse("tiny") is None  # the lock
    assert r.parse("plain") == []
    assert r.parse("safe") == ["acme/harm@1", "acme/tox@^1"]
    assert r.parse("tiny+acme/x@1+acme/y@^1.2") == ["acme/x@1", "acme/y@^1.2"]
    assert r.parse("tiny+safe+acme/z") == ["acme/harm@1", "acme/tox@^1", "acme/z"]
    assert r.parse("tiny+acme/x@1.0.0+build.7+acme/y") == ["acme/x@1.0.0+build.7", "acme/y"]  # SemVer build metadata
    assert r.parse("tiny+acme/x@>=1.0,<2") == ["acme/x@>=1.0,<2"]


@pytest.mark.parametrize(("model", "status"), [
    ("gpt-4o", 404), ("tinyx", 404), ("tiny+", 400), ("tiny++acme/x", 400), ("tiny+notaref", 404),
    ("tiny+/etc/passwd", 404), ("tiny+./local/dir", 404), ("", 400), ("tiny+" + "+".join(["acme/x"] * 9), 400),
])
def test_model_field_refusals(tmp_path: Path, model: str, status: int) -> None:
    with pytest.raises(APIError) as info:
        _resolver(tmp_path).parse(model)
    assert info.value.status == status and info.value.param == "model"
    assert set(info.value.body()["error"]) == {"message", "type", "param", "code"}


def test_resolution_refusals_map_to_statuses_and_cache_nothing(tmp_path: Path) -> None:
    model = write_fake_model(tmp_path / "model")
    kit = Kit.create(tmp_path / "kit")
    good = kit.patch(model, name="acme/good")
    stranger = kit.patch(model, name="other/x")  # acme's key, outside its acme/* scope
    wrong_base = kit.patch(None, name="acme/wrong")
    aliases = {"good": [str(good)], "stranger": [str(stranger)], "wrongbase": [str(wrong_base)]}
    r = PatchResolver(model, ServeConfig(aliases=aliases), name="tiny", trust=TrustStore.load(kit.trust), registry=None)
    r.check_aliases()
    constants.patchkit_home().joinpath("registry").mkdir()  # a local registry without acme/missing (absent: 502)
    ps = r.resolve("good")
    assert [p.name for p in ps.patches] == ["acme/good"] and ps.patches[0].digest.startswith("sha256:")
    assert ps.header() == f"acme/good@1.0.0={ps.patches[0].digest}"
    for alias, (status, code) in {"stranger": (403, "patch_untrusted"), "wrongbase": (400, "patch_incompatible"),
                                  "tiny+acme/missing@1": (404, "model_not_found")}.items():
        with pytest.raises(APIError) as info:
            r.resolve(alias)
        assert (info.value.status, info.value.code) == (status, code), info.value.message
    assert [k.model for k in r.known()] == ["good"]


def test_bad_aliases_refuse_to_start(tmp_path: Path) -> None:
    from patchkit.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        _resolver(tmp_path, broken=["not-a-ref-or-dir"]).check_aliases()
    with pytest.raises(InvalidInputError):
        PatchResolver(write_fake_model(tmp_path / "m2"), ServeConfig(aliases={"tiny": []}), name="tiny",
                      trust=TrustStore.load(), registry=None).check_aliases()


def test_client_cannot_load_or_probe_unpublished_directories_in_the_server_cwd(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack: `model: "base+dist/draft"` loads a signed, trusted but unpublished directory from the server's cwd,
    or at least tells the client which directories exist there. Only registry refs and aliases may be named."""
    import asyncio
    import json
    import shutil

    from patchkit.serve.app import ServerState, asgi
    from patchkit.serve.metrics import Metrics
    from tests.serve._support import asgi_call
    from tests.serve.test_app import ScriptedEngine

    model = write_fake_model(tmp_path / "model")
    kit = Kit.create(tmp_path / "kit")
    drafts = {"dist/draft": "acme/draft", "dist/Draft_2": "acme/draft2", "draft": "acme/draft3", "acme/tox@1.0.0": "acme/tox"}
    with_drafts, empty = tmp_path / "with-drafts", tmp_path / "empty"
    empty.mkdir()
    for rel, name in drafts.items():
        shutil.copytree(kit.patch(model, name=name), with_drafts / rel)  # each one signed by a trusted key, base matching
    attempts = ["tiny+dist/draft", "tiny+dist/Draft_2", "tiny+./dist/draft", f"tiny+{with_drafts}/dist/draft", "tiny+draft",
                "tiny+acme/tox@1.0.0", "tiny+dist/draft@1.0.0", "tiny+acme/x@1.0.0+dist", "dist/draft"]
    config = ServeConfig(name="tiny")
    (tmp_path / "reg").mkdir()  # the registry exists and lacks them all: refs are 404 (an absent registry is a 502)

    def answers(cwd: Path) -> list[tuple[int, bytes]]:
        monkeypatch.chdir(cwd)
        resolver = PatchResolver(model, config, name="tiny", trust=TrustStore.load(kit.trust), registry=f"file://{tmp_path / 'reg'}")
        state = ServerState(engine=ScriptedEngine(), resolver=resolver, config=config, metrics=Metrics(), name="tiny")
        out = []
        for m in attempts:
            body = json.dumps({"model": m, "prompt": "a b"}).encode()
            status, _, raw = asyncio.run(asgi_call(asgi(state), "POST", "/v1/completions", body))
            out.append((status, raw))
        assert resolver.known() == []  # nothing was loaded
        return out

    there, absent = answers(with_drafts), answers(empty)
    for m, (status, raw) in zip(attempts, there, strict=True):
        assert status == 404 and json.loads(raw)["error"]["code"] == "model_not_found", (m, raw)
    assert there == absent  # byte for byte: the answer does not depend on what the server's disk holds
