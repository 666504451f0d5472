"""kv-budget with --weights: a user's checkpoint directory is planned, emitted and run; the plan names the
checkpoint by a fingerprint of its files, and a changed or foreign checkpoint is refused with one line."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("kvpress")

from planner.cli import main  # noqa: E402
from planner.families.kv_budget import workload as wl  # noqa: E402
from tests.cli.test_kv_budget_cli import PLAN, _requests  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama-style checkpoint with SmolLM2's vocabulary size, saved as a user would."""
    import torch
    import transformers

    from planner.registry import resolve_model
    from profilers.models import transformers_config

    cfg = transformers_config(resolve_model("smollm2-135m"), True)
    cfg.vocab_size = 49152
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    path = tmp_path_factory.mktemp("ckpt") / "my-lm"
    model.save_pretrained(str(path))
    return path


def _plan_args(weights: Path) -> list[str]:
    return [a for a in PLAN if a != "--tiny"] + ["--weights", str(weights)]


@pytest.fixture()
def workload(smollm2_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real loader (it reads the checkpoint and SmolLM2's tokenizer) with random-id prompts scored by their
    first token, as in test_kv_budget_cli."""
    real = wl.load_lm

    def load(spec, tiny, weights, seed):
        lm = real(spec, tiny, weights, seed)
        lm.decode = lambda ids: " ".join(map(str, ids))
        lm.score = lambda req, text: float(text.split(" ")[:1] == req.answer.split(" ")[:1])
        return lm

    monkeypatch.setattr(wl, "load_lm", load)
    monkeypatch.setattr(wl, "make_requests", _requests)
    monkeypatch.setattr(wl, "parse_workload", lambda text, spec, tiny: SimpleNamespace(length=96))


def test_a_checkpoint_is_planned_emitted_and_run_from_elsewhere(
        checkpoint: Path, workload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from planner.registry import resolve_model

    monkeypatch.chdir(tmp_path)
    assert main(_plan_args(checkpoint) + ["-o", "a.json"]) == 0
    plan = json.loads(Path("a.json").read_text())
    assert plan["model"]["fingerprint"] == wl.weights_fingerprint(str(checkpoint))
    assert plan["model"]["fingerprint"] != resolve_model("smollm2-135m").fingerprint(False)
    assert str(checkpoint) in plan["model"]["source"] and plan["inputs"]["weights"] == str(checkpoint)
    assert main(["emit", "a.json", "-o", "build"]) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["run", "../build", "--json", "receipt.json"]) == 0
    assert json.loads(Path("receipt.json").read_text())["totals"]["prompts"] == 4

    changed = tmp_path / "changed"
    shutil.copytree(checkpoint, changed)
    monkeypatch.chdir(tmp_path)
    assert main(_plan_args(changed) + ["-o", "c.json"]) == 0
    assert main(["emit", "c.json", "-o", "build-c"]) == 0
    cfg = json.loads((changed / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-5 if cfg.get("rms_norm_eps") != 1e-5 else 1e-6
    (changed / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    assert main(["run", "build-c"]) == 2
    err = capsys.readouterr().err
    assert "has changed since the plan" in err and len(err.strip().splitlines()) == 1
    assert main(["emit", "c.json", "-o", "build-d"]) == 2
    assert not Path("build-d").exists()


def test_a_foreign_or_empty_checkpoint_is_refused_with_one_line(
        checkpoint: Path, workload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    gpt = tmp_path / "gpt"
    gpt.mkdir()
    (gpt / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (gpt / "model.safetensors").write_bytes(b"x")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((checkpoint / "config.json").read_text())
    for path, words in ((gpt, "holds a 'gpt2' model"), (empty, "no .safetensors or .bin"),
                        (tmp_path / "missing", "no config.json there")):
        capsys.readouterr()
        assert main(_plan_args(path) + ["-o", "x.json"]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1
        assert not Path("x.json").exists()
