"""The README's tour works as written: every `planner` command of its first code block, in order, in an
empty folder, exits 0 (in-process; the same entry point as the console script)."""
from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from planner.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


def tour_commands() -> list[list[str]]:
    """The `planner ...` lines of the code block under '## A short tour', comments removed."""
    text = README.read_text(encoding="utf-8")
    block = text.split("## A short tour", 1)[1].split("```", 2)[1]
    out = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("planner "):
            out.append(shlex.split(line)[1:])
    return out


def test_the_tour_has_the_main_stories() -> None:
    cmds = [c[0] for c in tour_commands()]
    for needed in ("plan", "inspect", "diff", "trace", "calibrate", "emit", "run", "profile", "hardware"):
        assert needed in cmds


def test_every_tour_command_exits_0(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for argv in tour_commands():
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 0, (argv, err)
