"""The generation cache key: the settings enter it field by field, so a key computed once stays valid."""

from __future__ import annotations

from pathlib import Path

from patchkit.train.generation import GenerationCache, GenerationSettings


def test_settings_key_dict_and_cache_key_are_stable(tmp_path: Path) -> None:
    settings = GenerationSettings(max_new_tokens=48, dtype="float32", do_sample=True)
    assert settings.key_dict() == {"max_new_tokens": 48, "dtype": "float32", "do_sample": True}
    assert list(settings.key_dict()) == ["max_new_tokens", "dtype", "do_sample"]
    # Computed before key_dict became dataclasses.asdict: entries written then are still hits.
    key = GenerationCache.key("pk-model", "Hello", GenerationSettings(48, "float32"))
    assert key == "95305b04105f5577256b1f8f8bc37a0cd111f5b30d5b8c770509cb825ddc5d57"
    cache = GenerationCache(tmp_path)
    cache.put(key, "Hi there")
    assert cache.get(key) == "Hi there"
