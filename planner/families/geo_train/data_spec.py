"""The --data spec of geo-train: what each region trains on."""
from __future__ import annotations

from typing import Any

from core.errors import PlannerError


def parse_data(text: str) -> dict[str, Any]:
    """'synthetic:by-source[:SOURCES]' -> {'kind': 'synthetic', 'split': 'by-source', 'sources': n or None}."""
    kind, _, rest = str(text).partition(":")
    if kind == "synthetic":
        split, _, n = rest.partition(":")
        if split not in ("by-source", ""):
            raise PlannerError(f"--data {text}: unknown split '{split}'", "use synthetic:by-source[:SOURCES]")
        if n and not n.isdigit():
            raise PlannerError(f"--data {text}: the source count '{n}' is not a whole number", "e.g. synthetic:by-source:4")
        return {"kind": "synthetic", "split": "by-source", "sources": int(n) if n else None}
    if kind == "corpus":
        raise PlannerError(f"--data {text}: the corpus test bed is not available in this build",
                           "use --data synthetic:by-source until testbeds/corpus.py is merged")
    raise PlannerError(f"--data {text}: unknown data kind '{kind}'", "use synthetic:by-source[:SOURCES]")
