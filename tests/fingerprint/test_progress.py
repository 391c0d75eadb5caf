"""17 (item 16): a progress bar that is shown ends at 100%, not short of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import write_fake_model

BARS: list[Any] = []


class _Recorder:
    def __init__(self, *args: Any, total: int | None = None, **kwargs: Any) -> None:
        self.total, self.n, self.closed = total, 0, False
        BARS.append(self)

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    import tqdm

    BARS.clear()
    monkeypatch.setattr(tqdm, "tqdm", _Recorder)
    return BARS


def test_the_fingerprint_bar_reaches_its_total(tmp_path: Path, bars: list[Any]) -> None:
    from patchkit.basemodel._fingerprint.discover import discover
    from patchkit.basemodel._fingerprint.hashing import hash_layout
    from patchkit.basemodel._fingerprint.reading import read_layout

    layout = read_layout(discover(write_fake_model(tmp_path / "m", seed=3)))
    hash_layout(layout, "blake3", progress=True)
    assert len(bars) == 1 and bars[0].closed
    assert bars[0].total == layout.bytes > 0 and bars[0].n == bars[0].total


def test_the_download_bar_reaches_its_total(tmp_path: Path, bars: list[Any], pk_home: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from patchkit import constants
    from patchkit.registry import pull
    from tests.registry.conftest import make_vendor

    vendor = make_vendor(tmp_path / "vendor")
    vendor.publish("1.0.0", "local")
    monkeypatch.setattr(constants, "no_progress", lambda: False)
    pull("acme/tox@1", registry="local")
    assert bars and all(b.closed and b.total and b.n == b.total for b in bars), [(b.n, b.total) for b in bars]
