"""What an evaluation produces: metrics in the manifest's format, per-configuration figures and
samples, the settings that reproduce it. Its own module, so the report reads it without the runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EvalResult:
    metrics: list[dict[str, Any]]
    configs: dict[str, dict[str, Any]]
    settings: dict[str, Any]
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    detector: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "configs": self.configs, "settings": self.settings,
                "datasets": self.datasets, "detector": self.detector}

    def table(self) -> list[dict[str, Any]]:
        """One row per metric: each configuration's figure."""
        rows = []
        for m in self.metrics:
            row = {"name": m["name"], "dataset": m["dataset"], "n": m["n"], "higher_is_better": m["higher_is_better"]}
            for c in self.configs:
                row[c] = self.configs[c]["metrics"].get(m["name"], {}).get("value")
            rows.append(row)
        return rows


__all__ = ["EvalResult"]
