"""Promises of the CLI beyond the bad-input corpus: progress on a terminal with stdout kept for the tables,
notes printed once and silenced by -q, figures replaced only when planner's mark is in them, SIGTERM
cleaning up like Ctrl-C, a local model directory winning over a catalog miss, one "vs plan" convention,
and the range checks every plan's numbers get."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from planner.cli import main
from tests.cli.corpus_fixtures import GOLDEN, SMALL_MOE

EMU = ["plan", "small_moe.json", "--hardware", "cpu_emulated_link"]   # a small plan whose notes say baselines were skipped
ESC = "\x1b"


class FakeTerminal(io.StringIO):
    """stderr as a terminal: rich draws its live line into it."""

    def isatty(self) -> bool:
        return True


@pytest.fixture()
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small_moe.json").write_text(json.dumps(SMALL_MOE), encoding="utf-8")
    return tmp_path


def test_plan_on_a_terminal_shows_progress_and_stdout_holds_only_the_tables(
        work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    term = FakeTerminal()
    monkeypatch.setattr("sys.stderr", term)
    assert main(EMU) == 0
    err, out = term.getvalue(), capsys.readouterr().out
    phases = re.findall(r"moe-offload phase (\d+)/(\d+): ([\w -]+)", err)
    assert len({p[0] for p in phases}) >= 3, err             # which phase, how far ...
    assert all(p[1] == phases[0][1] for p in phases)
    assert re.search(r"\d:\d\d:\d\d", err), err               # ... and the elapsed time
    # stdout: the tables, each note once, nothing of the progress line or the stderr messages
    assert "plan vs baselines" in out and ESC not in out
    assert "phase " not in out and "scenario:" not in out and "wrote" not in out
    notes = [l for l in out.splitlines() if l.startswith("note:")]
    assert notes and len(notes) == len(set(notes))
    assert "note:" not in err                                  # printed once: in the tables, not again on stderr

    # piped (stderr not a terminal): no progress, no control codes; the same tables on stdout
    monkeypatch.undo()
    monkeypatch.chdir(work)
    assert main(EMU) == 0
    piped = capsys.readouterr()
    assert piped.out == out
    assert "phase " not in piped.err and ESC not in piped.err and "note:" not in piped.err


def test_quiet_prints_only_the_scenario_line(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(EMU + ["-q", "-o", "p.json"]) == 0
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith("scenario: moe-offload")
    for word in ("note:", "wrote", "solver wall time", "phase "):
        assert word not in out.err, out.err
    assert (work / "p.json").is_file()
    assert main(EMU + ["--json", "-o", "p.json"]) == 0         # JSON on stdout: the notes go to stderr, once
    out = capsys.readouterr()
    assert json.loads(out.out)["family"] == "moe-offload"
    assert out.err.count("note: baseline hybrimoe skipped") == 1


@pytest.mark.parametrize("fmt", ["png", "pdf", "svg"])
def test_plot_replaces_only_a_figure_with_planners_mark(work: Path, fmt: str) -> None:
    from planner.inspect_view import FIGURE_MARK, figure_mark
    from planner.serde import load

    plan = str(GOLDEN / "mixtral-8x7b.a100_24gb.json")
    assert main(["inspect", plan, "--plot", f"p.{fmt}"]) == 0
    data = (work / f"p.{fmt}").read_bytes()
    assert figure_mark(load(plan)).encode() in data            # the command and the plan's sha256
    assert main(["inspect", plan, "--plot", f"p.{fmt}"]) == 0  # its own figure: replaced
    # a user's matplotlib figure of the same format survives byte for byte, even beside planner's own
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([3, 1, 2])
    fig.savefig(work / f"mine.{fmt}", format=fmt)
    plt.close(fig)
    mine = (work / f"mine.{fmt}").read_bytes()
    assert FIGURE_MARK.encode() not in mine
    assert main(["inspect", plan, "--plot", f"mine.{fmt}"]) == 2
    assert (work / f"mine.{fmt}").read_bytes() == mine
    assert main(["plan", "small_moe.json", "--hardware", "a100_24gb", "-o", f"p.{fmt}", "--force"]) == 2   # other kind
    assert FIGURE_MARK.encode() in (work / f"p.{fmt}").read_bytes()


def test_sigterm_during_emit_cleans_up_like_ctrl_c(work: Path, tiny_artifact: tuple[Path, Path],
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    plan_path, artifact = tiny_artifact
    shutil.copytree(artifact, work / "build")
    before = {p.relative_to(work): p.read_bytes() for p in (work / "build").rglob("*") if p.is_file()}
    from planner.families.moe_offload import MoeOffloadFamily

    def terminated(self, plan, values, staging, progress):  # type: ignore[no-untyped-def]
        (staging / "half-written").write_text("x")
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(500):          # the handler runs between bytecodes of the main thread
            time.sleep(0.01)
        raise AssertionError("SIGTERM was not delivered")

    monkeypatch.setattr(MoeOffloadFamily, "emit", terminated)
    handler = signal.getsignal(signal.SIGTERM)
    assert main(["emit", str(plan_path), "-o", "build"]) == 143
    assert "terminated" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) == handler        # the CLI's handler is gone after main returns
    after = {p.relative_to(work): p.read_bytes() for p in (work / "build").rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in work.iterdir()) == ["build", "small_moe.json"]   # no hidden staging folder


def test_a_local_model_directory_wins_over_a_catalog_miss(work: Path) -> None:
    from planner.registry import resolve_model

    (work / "mymix").mkdir()
    (work / "mymix" / "config.json").write_text(json.dumps(SMALL_MOE), encoding="utf-8")
    spec = resolve_model("mymix")
    assert spec.kind == "config-file" and spec.name == "mymix" and spec.config_path == str(Path("mymix/config.json"))
    assert resolve_model("mixtral-8x7b").kind != "config-file"   # a catalog name still means the catalog


def test_vs_plan_is_worse_above_one_whichever_way_the_objective_points() -> None:
    from rich.console import Console

    from planner.inspect_view import VS_PLAN_HEADER, baselines_table, worse_ratio
    from planner.schema import BaselineResult, HardwareRef, ModelRef, Objective, Plan, SolverInfo

    assert worse_ratio(30.0, 10.0, "min") == 3.0                 # a baseline 3x slower
    assert worse_ratio(0.25, 1.0, "max") == 4.0                  # a baseline with a quarter of the rate
    assert worse_ratio(2.0, 1.0, "max") == 0.5                   # a bound above a maximised plan: better
    plan = Plan(family="x", model=ModelRef("m", "sha256:0"), hardware=HardwareRef("h", "sha256:1"),
                solver=SolverInfo("s", "OPTIMAL"), objective=Objective("progress_rate_per_s", "max", 0.4),
                predicted={"progress_rate_per_s": 0.4},
                baselines={"slow": BaselineResult("slow", predicted={"progress_rate_per_s": 0.2})})
    console = Console(file=io.StringIO(), width=120)
    console.print(baselines_table(plan, ("progress_rate_per_s",)))
    text = console.file.getvalue()
    assert VS_PLAN_HEADER in text
    assert re.search(r"slow\s+0\.2\s+2\.00x", text), text


def test_every_golden_plan_passes_the_number_checks_and_edits_are_caught() -> None:
    from planner.plan_numbers import check_numbers, metric_range
    from planner.serde import from_dict, load

    assert metric_range("e2e_ms") == metric_range("bytes_per_token") == metric_range("progress_rate_per_s") == (0.0, None)
    assert metric_range("hit_rate") == metric_range("host_fraction") == (0.0, 1.0)
    assert metric_range("accuracy_drop") is None
    for path in sorted(GOLDEN.glob("*.json")):
        assert check_numbers(load(path)) == [], path
    d = json.loads((GOLDEN / "digits-cnn.raspberry_pi5_8gb.1mbps.json").read_text())
    d["predicted"]["cloud_ms"] = -1.0842e-16              # rounding noise of a difference of equal sums: accepted
    assert check_numbers(from_dict(d)) == []
    d["predicted"]["throughput_rps"] = -2.0
    with pytest.raises(Exception, match="throughput_rps is -2"):
        from_dict(d)
