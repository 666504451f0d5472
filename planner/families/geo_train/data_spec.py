"""The --data spec of geo-train: what each region trains on."""
from __future__ import annotations

from typing import Any

from core.errors import PlannerError


def parse_data(text: str) -> dict[str, Any]:
    """'corpus:by-source' (testbeds/corpus.py: one stdlib docstring source per region, byte tokens) or
    'synthetic:by-source[:SOURCES]' (a sparse bigram chain per source) -> {'kind', 'split', 'sources'}."""
    kind, _, rest = str(text).partition(":")
    if kind == "synthetic":
        split, _, n = rest.partition(":")
        if split not in ("by-source", ""):
            raise PlannerError(f"--data {text}: unknown split '{split}'", "use synthetic:by-source[:SOURCES]")
        if n and not n.isdigit():
            raise PlannerError(f"--data {text}: the source count '{n}' is not a whole number", "e.g. synthetic:by-source:4")
        return {"kind": "synthetic", "split": "by-source", "sources": int(n) if n else None}
    if kind == "corpus":
        if rest not in ("by-source", ""):
            raise PlannerError(f"--data {text}: unknown corpus split '{rest}'",
                               "use corpus:by-source (one stdlib docstring source per region)")
        return {"kind": "corpus", "split": "by-source", "sources": None}
    raise PlannerError(f"--data {text}: unknown data kind '{kind}'", "use corpus:by-source or synthetic:by-source[:SOURCES]")
