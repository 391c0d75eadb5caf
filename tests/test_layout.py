"""The package's map (issue 24): what `ls patchkit/` shows is the map the package docstring draws,
and the public import paths survive the move into rooms."""

from __future__ import annotations

import importlib
from pathlib import Path

import patchkit

ROOT = Path(patchkit.__file__).parent
ROOMS = {"cli", "demo", "train", "serve", "eval", "runtime", "lm", "registry", "artifact", "trust", "basemodel", "_internal"}
FLOOR = {"__init__.py", "__main__.py", "manifest.py", "version.py", "errors.py", "constants.py", "py.typed"}


def test_ls_patchkit_is_the_map() -> None:
    entries = {p.name for p in ROOT.iterdir() if p.name != "__pycache__"}
    assert entries == ROOMS | FLOOR, sorted(entries ^ (ROOMS | FLOOR))
    doc = patchkit.__doc__ or ""
    for room in ROOMS - {"_internal"}:
        assert f"{room}/" in doc, f"the package docstring does not draw {room}/"


def test_public_import_paths_still_work() -> None:
    assert all(callable(getattr(patchkit, name)) for name in ("load", "generate", "verify", "fingerprint"))
    from patchkit.trust.store import TrustStore, trust_add, trust_add_root
    from patchkit.trust.store import TrustStore as Store

    assert TrustStore is Store and callable(trust_add) and callable(trust_add_root)
    for module in ("patchkit.registry", "patchkit.artifact.verify", "patchkit.trust.bundles", "patchkit.basemodel.fingerprint",
                   "patchkit.demo.recipes.harmfulness", "patchkit.cli.ci_report"):
        importlib.import_module(module)


def test_no_module_imports_itself_back() -> None:
    """No circle in the import drawing, function-level imports included (the layer contract checks
    the direction between rooms; this checks every module against every other)."""
    import grimp

    graph = grimp.build_graph("patchkit", include_external_packages=False, exclude_type_checking_imports=True)
    cycles = [(a, b) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
              if graph.find_shortest_chain(importer=b, imported=a) is not None]
    assert not cycles, cycles[:5]
