"""Bring your own model: `FILE.py:factory` from the current directory (not on the import path), planned, emitted, run.

The CLI runs in this process (no interpreter and torch start-up per command: this test took 146 s as four
subprocesses on the loaded host); the current directory is checked to be off `sys.path`, as it is for the
`planner` console script, so the dotted form cannot import the file and the file form must."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from planner.cli import main
from tests.planner.cli_runner import ROOT


def test_file_factory_plans_emits_and_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(ROOT / "examples" / "mycnn.py", tmp_path / "mycnn.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".") and Path(p).resolve() != tmp_path.resolve()])
    monkeypatch.setenv("COLUMNS", "200")
    common = ["--hardware", "raspberry_pi5_8gb", "--cloud", "a100_80gb", "--link", "20mbps"]
    # the dotted form fails here (the directory is not importable) and names the file form as the fix
    assert main(["plan", "mycnn:make", *common, "-q"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and "mycnn.py:make" in err[0], err
    assert "mycnn" not in sys.modules
    assert main(["plan", "mycnn.py:make", *common, "-o", "plan.json", "-q"]) == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["family"] == "split-inference" and plan["model"]["name"] == "mycnn.py:make"
    assert plan["objective"]["metric"] == "throughput_rps"
    # the branched graph: both paths exist as nodes the plan could cut
    assert plan["decisions"]["graph"]["nodes"] >= 10
    assert main(["emit", "plan.json", "-o", "build"]) == 0
    assert main(["run", "build", "--baseline", "all_cloud", "--requests", "4", "--no-emulate"]) == 0
    assert os.path.isdir(tmp_path / "build")
