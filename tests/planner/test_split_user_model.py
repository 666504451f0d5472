"""Bring your own model: `FILE.py:factory` from the current directory (no PYTHONPATH), planned, emitted, run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.planner.cli_runner import ROOT, assert_one_line_error


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT)          # the planner itself; the user's file is NOT on the path
    env["COLUMNS"] = "200"
    # -P: the current directory is not put on sys.path, as for the `planner` console script
    return subprocess.run([sys.executable, "-P", "-m", "planner.cli", *args], capture_output=True, text=True, timeout=600,
                          env=env, cwd=cwd)


def test_file_factory_plans_emits_and_runs(tmp_path: Path) -> None:
    shutil.copy(ROOT / "examples" / "mycnn.py", tmp_path / "mycnn.py")
    common = ["--hardware", "raspberry_pi5_8gb", "--cloud", "a100_80gb", "--link", "20mbps"]
    # the dotted form fails here (the directory is not importable) and names the file form as the fix
    assert_one_line_error(_cli(tmp_path, "plan", "mycnn:make", *common, "-q"), "mycnn.py:make")
    got = _cli(tmp_path, "plan", "mycnn.py:make", *common, "-o", "plan.json", "-q")
    assert got.returncode == 0, got.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["family"] == "split-inference" and plan["model"]["name"] == "mycnn.py:make"
    assert plan["objective"]["metric"] == "throughput_rps"
    # the branched graph: both paths exist as nodes the plan could cut
    assert plan["decisions"]["graph"]["nodes"] >= 10
    got = _cli(tmp_path, "emit", "plan.json", "-o", "build")
    assert got.returncode == 0, got.stderr
    got = _cli(tmp_path, "run", "build", "--baseline", "all_cloud", "--requests", "4", "--no-emulate")
    assert got.returncode == 0, got.stderr
