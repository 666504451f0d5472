"""Receipts: what the runtime actually applied and measured, next to what the plan predicted and simulated.

A receipt is plain data (JSON-able). Rows are per decision (a layer, a device); `flags` lists rows
where measured and predicted differ by more than `FLAG_REL` (20 %), so a plan never silently fails
to take effect.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

FLAG_REL = 0.20


@dataclass
class Receipt:
    """Measured vs predicted vs simulated, per decision and in total."""

    family: str
    config: str                      # "plan" or the baseline's name
    link: str                        # what carried the bytes (CUDA stream or emulated link, labelled)
    rows: list[dict[str, Any]] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    output_text: str = ""
    tokens: list[int] = field(default_factory=list)

    def flag_differences(self, keys: tuple[tuple[str, str], ...]) -> None:
        """Flag rows where measured (first key) and predicted (second key) differ by more than FLAG_REL."""
        for row in self.rows:
            for measured, predicted in keys:
                m, p = row.get(measured), row.get(predicted)
                if m is None or p is None:
                    continue
                scale = max(abs(p), 1e-9)
                if abs(m - p) / scale > FLAG_REL and abs(m - p) > 0.02:
                    self.flags.append(f"{row.get('layer', row.get('name', '?'))}: {measured} {m:.3g} vs {predicted} {p:.3g}")

    def to_json(self) -> str:
        """Deterministic JSON text."""
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=float) + "\n"
