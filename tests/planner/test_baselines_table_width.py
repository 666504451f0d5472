"""The plan-vs-baselines table at 80 columns: figures and config names are never cut; headers wrap instead."""
from __future__ import annotations

import dataclasses
import io
from pathlib import Path

from rich.console import Console

from planner.inspect_view import baselines_table
from planner.serde import load

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "mixtral-8x7b.a100_24gb.json"


def test_small_figures_and_long_names_are_not_cut_at_80_columns() -> None:
    plan = load(GOLDEN)
    name = next(iter(plan.baselines))
    tiny = {k: 1.0172e-05 for k in plan.predicted if isinstance(plan.predicted[k], float)}
    long_name = "a_baseline_with_a_rather_long_name"
    baselines = {**plan.baselines, long_name: dataclasses.replace(plan.baselines[name],
                                                                  predicted={**plan.baselines[name].predicted, **tiny})}
    plan = dataclasses.replace(plan, baselines=baselines)
    metrics = ("ttft_ms", "tpot_ms", "e2e_ms", "tokens_per_s", "bytes_per_token")
    out = io.StringIO()
    Console(file=out, width=80, highlight=False, color_system=None).print(
        baselines_table(plan, metrics, labels={m: m.replace("_", " ") for m in metrics}))
    text = out.getvalue()
    assert "…" not in text and long_name in text and "1.02e-05" in text
    assert max(len(line) for line in text.splitlines()) <= 80
