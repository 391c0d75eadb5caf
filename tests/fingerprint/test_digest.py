"""The digest is stable where it should be and sensitive where it should be."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import blake3
import pytest

from patchkit.basemodel.fingerprint import (
    digests_equal,
    fingerprint,
    fingerprint_details,
    fingerprint_matches,
    is_digest,
    parse_digest,
)
from patchkit.errors import InvalidInputError
from tests.fingerprint.helpers import INDEX, random_tensors, write_model


def fp(path: Path, algorithm: str = "blake3") -> str:
    return fingerprint(path, algorithm=algorithm, use_cache=False)


@pytest.fixture
def tensors() -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    return random_tensors(seed=1)


@pytest.fixture
def base(tmp_path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> str:
    return fp(write_model(tmp_path / "base", tensors))


def test_digest_follows_documented_format(tmp_path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> None:
    model = write_model(tmp_path / "m", tensors)
    for algorithm, new in (("blake3", blake3.blake3), ("sha256", hashlib.sha256)):
        lines = sorted(
            json.dumps([n, d, list(s), new(b).hexdigest()], separators=(",", ":")) for n, (d, s, b) in tensors.items()
        )
        root = new(b"pk-tensors-v1\n" + "".join(line + "\n" for line in lines).encode()).hexdigest()
        assert fp(model, algorithm) == f"pk-tensors-{algorithm}-v1:{root}"


def test_details_count_tensors_bytes_and_files(tmp_path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> None:
    model = write_model(tmp_path / "m", tensors, shards=3)
    res = fingerprint_details(model, use_cache=False)
    assert res.tensors == len(tensors)
    assert res.bytes == sum(len(b) for _, _, b in tensors.values())
    assert res.files == ("model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors")
    assert res.algorithm == "blake3" and res.cached is False
    assert res.to_dict()["files"] == list(res.files)


def test_one_shard_equals_three_shards_with_index(tmp_path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]], base: str) -> None:
    three = write_model(tmp_path / "three", tensors, shards=3)
    assert (three / INDEX).exists()
    assert fp(three) == base
    assert fp(three, "sha256") == fp(tmp_path / "base", "sha256")


def test_tensor_order_and_metadata_do_not_matter(tmp_path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]], base: str) -> None:
    shuffled = write_model(tmp_path / "rev", tensors, reverse_order=True)
    with_meta = write_model(tmp_path / "meta", tensors, metadata={"format": "pt", "note": "anything"})
    assert (shuffled / "model.safetensors").read_bytes() != (tmp_path / "base" / "model.safetensors").read_bytes()
    assert fp(shuffled) == base
    assert fp(with_meta) == base


def test_file_names_and_sharding_without_index_do_not_matter(
    tmp_path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]], base: str
) -> None:
    m = write_model(tmp_path / "m", tensors, shards=2, index=False, names=["zz.safetensors", "aa.safetensors"])
    assert fp(m) == base


def test_single_file_path_is_a_model(tmp_path: Path, base: str) -> None:
    assert fp(tmp_path / "base" / "model.safetensors") == base


@pytest.mark.parametrize("name", sorted(random_tensors(seed=1)))
def test_one_changed_element_in_any_tensor_changes_digest(
    tmp_path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]], base: str, name: str
) -> None:
    dtype, shape, data = tensors[name]
    changed = bytearray(data)
    changed[-1] ^= 0x01  # lowest bit of the last element
    other = dict(tensors)
    other[name] = (dtype, shape, bytes(changed))
    assert fp(write_model(tmp_path / "x", other)) != base


def test_renamed_tensor_changes_digest(tmp_path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]], base: str) -> None:
    other = dict(tensors)
    other["model.norm.weight_renamed"] = other.pop("model.norm.weight")
    assert fp(write_model(tmp_path / "x", other)) != base


def test_changed_dtype_with_same_bytes_changes_digest(
    tmp_path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]], base: str
) -> None:
    other = dict(tensors)
    _, shape, data = other["model.embed_tokens.weight"]
    other["model.embed_tokens.weight"] = ("F16", shape, data)  # BF16 -> F16, same bytes
    assert fp(write_model(tmp_path / "x", other)) != base


def test_changed_shape_with_same_bytes_changes_digest(
    tmp_path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]], base: str
) -> None:
    other = dict(tensors)
    dtype, _, data = other["model.layers.0.mlp.up_proj.weight"]
    other["model.layers.0.mlp.up_proj.weight"] = (dtype, (16, 32), data)  # was (32, 16)
    assert fp(write_model(tmp_path / "x", other)) != base


def test_extra_or_missing_tensor_changes_digest(tmp_path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]], base: str) -> None:
    fewer = dict(tensors)
    del fewer["model.step"]
    more = dict(tensors)
    more["extra"] = ("F32", (0,), b"")
    assert fp(write_model(tmp_path / "a", fewer)) != base
    assert fp(write_model(tmp_path / "b", more)) != base


def test_sha256_digest_string_and_both_kinds_verify(tmp_path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]], base: str) -> None:
    model = tmp_path / "base"
    sha = fp(model, "sha256")
    assert sha.startswith("pk-tensors-sha256-v1:") and len(sha.split(":")[1]) == 64
    assert base.startswith("pk-tensors-blake3-v1:") and len(base.split(":")[1]) == 64
    assert parse_digest(sha) == ("sha256", sha.split(":")[1])
    assert parse_digest(base) == ("blake3", base.split(":")[1])
    assert not digests_equal(sha, base)  # different algorithms never compare equal
    assert fingerprint_matches(model, sha) and fingerprint_matches(model, base)
    assert fingerprint_matches(model, base.upper().replace("PK-TENSORS-BLAKE3-V1", "pk-tensors-blake3-v1"))

    other = dict(tensors)
    dtype, shape, data = other["model.norm.weight"]
    other["model.norm.weight"] = (dtype, shape, bytes([data[0] ^ 0xFF]) + data[1:])
    changed = write_model(tmp_path / "changed", other)
    assert not fingerprint_matches(changed, sha) and not fingerprint_matches(changed, base)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "sha256:" + "0" * 64,
        "pk-tensors-md5-v1:" + "0" * 64,
        "pk-tensors-blake3-v2:" + "0" * 64,
        "pk-tensors-blake3-v1:" + "0" * 63,
        "pk-tensors-blake3-v1:" + "g" * 64,
        "pk-tensors-blake3-v1:" + "0" * 64 + "\nx",
    ],
)
def test_parse_digest_refuses_garbage(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_digest(bad)
    assert not is_digest(bad)


def test_unknown_algorithm_is_refused(tmp_path: Path, base: str) -> None:
    with pytest.raises(InvalidInputError, match="unknown fingerprint algorithm"):
        fingerprint(tmp_path / "base", algorithm="md5")


def test_hf_cache_layout_equals_plain_copy(tmp_path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> None:
    plain = write_model(tmp_path / "plain", tensors, shards=3)
    repo = tmp_path / "hub" / "models--acme--tiny"
    blobs = repo / "blobs"
    snap = repo / "snapshots" / ("a" * 40)
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in sorted(plain.iterdir()):
        data = f.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / f.name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    assert all((snap / f.name).is_symlink() for f in plain.iterdir())
    res = fingerprint_details(snap, use_cache=False)
    assert res.digest == fp(plain)
    assert set(res.files) == {f.name for f in plain.glob("*.safetensors")}


def test_stray_files_beside_an_index_are_ignored(tmp_path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]], base: str) -> None:
    model = write_model(tmp_path / "m", tensors, shards=3)
    shutil.copy(tmp_path / "base" / "model.safetensors", model / "consolidated.safetensors")
    assert fp(model) == base  # only the shards the index lists are read
