"""The house table style: compact (no side borders, one space between columns), so views fit 80 columns."""
from __future__ import annotations

from rich import box
from rich.table import Table


def table(title: str | None = None) -> Table:
    """An empty table in the house style, its title left-aligned."""
    return Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1),
                 show_edge=False)
