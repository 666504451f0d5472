"""`planner run build/ --weights DIR`: a full-size plan (not --tiny) run on the user's own sharded checkpoint."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers

from planner.api import emit_artifact, plan_from_argv, run_artifact
from planner.cli import main
from planner.families.moe_offload.artifact import _prompt_ids
from planner.registry import resolve_model
from profilers.models import build_model, transformers_config

PROMPT = "offload the experts"
NEW = 8


def save(model: torch.nn.Module, path: Path) -> Path:
    model.save_pretrained(str(path), max_shard_size="200KB")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(7)
    model = build_model(resolve_model("mixtral-8x7b"), tiny=True, seed=7).module
    ckpt = save(model, root / "my-moe")
    shards = sorted(ckpt.glob("model-*.safetensors"))
    assert len(shards) > 3 and (ckpt / "model.safetensors.index.json").is_file()
    ctx = plan_from_argv([str(ckpt), "--hardware", "cpu_emulated_link", "--expert-budget", "40%", "--trace-tokens", "256",
                          "--sim-tokens", "64"])
    assert not ctx.plan.model.tiny and ctx.plan.model.dtype == "fp32"
    art = emit_artifact(ctx.plan, root / "build")
    ids = _prompt_ids(PROMPT, int(model.config.vocab_size))
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), max_new_tokens=NEW, do_sample=False)[0, len(ids):].tolist()
    return {"root": root, "ckpt": ckpt, "art": art, "model": model, "ref": ref}


def test_full_size_plan_runs_on_the_checkpoint_and_matches_generate(setup: dict) -> None:
    report = run_artifact(setup["art"], ["--weights", str(setup["ckpt"]), "--prompt", PROMPT,
                                         "--max-new-tokens", str(NEW), "--cpu"])
    receipt = json.loads(report.receipt_json)
    assert receipt["tokens"] == setup["ref"]
    assert receipt["totals"]["tokens"] == NEW


def _one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str], fragment: str) -> None:
    capsys.readouterr()   # drop what the test itself printed (save_pretrained's progress bar)
    assert main(argv) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err


def test_without_weights_a_full_size_artifact_says_what_to_pass(setup: dict, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_exit_2(["run", str(setup["art"]), "--cpu"], capsys, "--weights")


def test_bad_checkpoints_are_one_line_errors_before_any_weight_is_read(setup: dict, capsys: pytest.CaptureFixture[str]) -> None:
    root, ckpt, art = setup["root"], setup["ckpt"], str(setup["art"])
    run = ["run", art, "--cpu", "--max-new-tokens", "2", "--weights"]
    _one_line_exit_2(run + [str(root / "nowhere")], capsys, "does not exist")
    (root / "empty").mkdir(exist_ok=True)
    _one_line_exit_2(run + [str(root / "empty")], capsys, "no config.json")
    # a missing shard
    holed = root / "holed"
    shutil.copytree(ckpt, holed, dirs_exist_ok=True)
    victim = sorted(holed.glob("model-*.safetensors"))[2]
    victim.unlink()
    _one_line_exit_2(run + [str(holed)], capsys, f"shard {victim.name}")
    # a truncated shard (an interrupted download): bad input naming the shard, not an internal error
    cut = root / "cut"
    shutil.copytree(ckpt, cut, dirs_exist_ok=True)
    victim = sorted(cut.glob("model-*.safetensors"))[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    _one_line_exit_2(run + [str(cut)], capsys, f"{victim.name} is truncated")
    # another architecture
    other = build_model(resolve_model("qwen3-30b-a3b"), tiny=True).module
    _one_line_exit_2(run + [str(save(other, root / "qwen"))], capsys, "qwen3_moe")
    # the same architecture in another dtype
    bf16 = save(setup["model"].to(torch.bfloat16), root / "bf16")
    setup["model"].to(torch.float32)
    _one_line_exit_2(run + [str(bf16)], capsys, "BF16")
    # same architecture, other shapes
    cfg = transformers_config(resolve_model("mixtral-8x7b"), tiny=True)
    cfg.intermediate_size = 96
    wider = transformers.AutoModelForCausalLM.from_config(cfg)
    _one_line_exit_2(run + [str(save(wider, root / "wider"))], capsys, "shape")
