"""fed-lora on the instruction test bed: a --tiny SmolLM2 plan emitted and run through the Flower apps in-process
(the benchmark's path, benchmarks/fed_lora.py), and the training loss against fed-expand's answer loss."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

POP = """devices:
  - {id: big, kind: jetson_orin_nano_8gb, memory: 64MiB, link: 100mbps}
  - {id: phone-a, kind: phone_midrange_8gb, memory: 64MiB, link: 20mbps}
  - {id: phone-b, kind: phone_midrange_8gb, memory: 64MiB, link: 20mbps}
"""
DATA = "instruct:upper+format+recall,total=60,test_per_task=4,seed=3"


def tiny_llama(seed: int = 0):
    """SmolLM2's tiny catalog architecture with seeded random weights."""
    import transformers

    from planner.registry import resolve_model

    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(**{**resolve_model("smollm2-135m").config, **resolve_model("smollm2-135m").tiny})
    return transformers.LlamaForCausalLM(cfg).float().eval()


def test_instruct_loss_is_fed_expands_answer_loss() -> None:
    """The fed-lora runtime's loss (head over every position, labels masked to the answer, as the plan's profile
    measures it) equals fed-expand's answer loss (head on the answer positions only)."""
    from kernels.block_training import answer_loss
    from runtime.fed.lora_model import InstructLM

    lm = tiny_llama()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, lm.config.vocab_size, (3, 12), generator=g)
    mask = torch.zeros(3, 12, dtype=torch.bool)
    mask[0, 5:9] = True
    mask[1, 1:12] = True
    mask[2, 10:] = True
    with torch.no_grad():
        ours = InstructLM(lm).answer_loss(ids, mask)
        theirs = answer_loss(lm, ids, mask)
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


def test_tiny_smollm2_plan_emits_and_runs_on_the_instruction_bed(tmp_path: Path, smollm2_cache: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from planner.cli import main
    from runtime.fed.lora_run import run_in_process
    from runtime.fed_expand.data import client_examples

    pop = tmp_path / "clients.yaml"
    pop.write_text(POP)
    plan = tmp_path / "plan.json"
    assert main(["plan", "smollm2-135m", "--tiny", "--scenario", "fed-lora", "--clients", str(pop), "--batch-size", "2",
                 "--seq-len", "32", "--local-steps", "2", "--rounds", "2", "-o", str(plan), "-q"]) == 0
    bad = tmp_path / "bad"
    capsys.readouterr()
    assert main(["emit", str(plan), "-o", str(bad), "--task-data", "instruct:uper"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "unknown instruction task 'uper'" in err[0] and "upper" in err[0], err
    assert not bad.exists()
    art = tmp_path / "art"
    assert main(["emit", str(plan), "-o", str(art), "--task-data", DATA, "--lr", "0.01"]) == 0
    cfg = yaml.safe_load((art / "runtime.yaml").read_text())
    assert cfg["model"]["task"] == "instruct" and (art / cfg["model"]["weights"]).is_file()
    assert cfg["training"]["data"]["tasks"] == ["upper", "format", "recall"] and cfg["training"]["data"]["seed"] == 3
    # non-IID by task: the clients' task mixtures differ
    mixes = [sorted({e.task for e in client_examples(cfg["training"]["data"], 3, k)}) for k in range(3)]
    counts = [[sum(e.task == t for e in client_examples(cfg["training"]["data"], 3, k)) for t in ("upper", "format", "recall")]
              for k in range(3)]
    assert len({tuple(c) for c in counts}) == 3, (mixes, counts)

    plan_run = run_in_process(art, rounds=2)
    uniform = run_in_process(art, rounds=2, baseline="uniform_depth")
    for rec in (plan_run, uniform):
        assert [r["round"] for r in rec["rounds"]] == [0, 1, 2]
        for cid, dev in rec["devices"].items():
            assert dev["trained_planned_depth"], (cid, dev)
            assert dev["rounds"] == 2
            # a client never holds more than the plan predicted for it (+10 %: shorter padded batches hold less)
            assert dev["measured_memory_bytes"] <= 1.1 * dev["predicted_memory_bytes"], (cid, dev)
        assert 0.0 <= rec["final_accuracy"] <= 1.0
        assert rec["rounds"][-1]["loss"] != rec["rounds"][0]["loss"]        # the server aggregated updates
    # the same start for every configuration
    assert plan_run["rounds"][0]["accuracy"] == uniform["rounds"][0]["accuracy"]
    assert plan_run["rounds"][0]["loss"] == uniform["rounds"][0]["loss"]
