"""fed-expand end to end on the tiny SmolLM2 architecture, in-process: plan (deterministic bytes), inspect, emit
(expansion identity checked), run on Flower's simulation with the receipt's budget check, and the same apps
driven in-process for a baseline."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from planner.cli import main

CLIENTS = {"devices": [
    {"id": "big", "kind": "jetson_orin_nano_8gb", "memory": "2GiB", "link": "100mbps"},
    {"id": "small", "kind": "phone_midrange_8gb", "memory": "2GiB", "link": "20mbps"},
    {"id": "mid", "kind": "raspberry_pi5_8gb", "memory": "2GiB", "link": "50mbps"}]}


def test_plan_inspect_emit_run(tmp_path: Path, capsys, smollm2_cache) -> None:
    pop = tmp_path / "clients.yaml"
    pop.write_text(yaml.safe_dump(CLIENTS), encoding="utf-8")
    argv = ["plan", "smollm2-135m:8L", "--tiny", "--scenario", "fed-expand", "--clients", str(pop),
            "--data", "instruct:4tasks,total=60,test_per_task=2", "--local-steps", "2", "--rounds", "1",
            "--batch-size", "2", "--seq-len", "32"]
    assert main(argv + ["-o", str(tmp_path / "a.json")]) == 0
    assert main(argv + ["-o", str(tmp_path / "b.json")]) == 0
    a = (tmp_path / "a.json").read_bytes()
    assert a == (tmp_path / "b.json").read_bytes()                    # same inputs, same plan bytes
    plan = json.loads(a)
    d = plan["decisions"]
    assert plan["family"] == "fed-expand" and d["num_base_blocks"] == 2      # tiny: 2 layers
    assert d["added_layers"] == [a + 1 + j for j, a in enumerate(d["added_after"])]
    covered = {j for c in d["clients"].values() for j in c["blocks"]}
    assert covered == set(range(d["added_blocks"]))                         # every added block has a trainer
    assert set(plan["baselines"]) == {"fixed_expansion", "static_allocation", "lora_fedavg", "full_ft"}
    assert plan["bound"]["gap"] >= 0
    from planner.families.fed_expand import FedExpandFamily
    from planner.serde import from_dict

    fam = FedExpandFamily()
    assert fam.validate_plan(from_dict(plan)) == []
    over = json.loads(a)                                                  # the validator reads the JSON alone
    first = next(iter(over["decisions"]["clients"]))
    over["predicted"]["clients"][first]["memory_bytes"] = 2 * over["predicted"]["clients"][first]["memory_budget_bytes"]
    assert "over its" in " ".join(fam.validate_plan(from_dict(over)))
    bare = json.loads(a)
    for c in bare["decisions"]["clients"].values():
        c["blocks"] = [j for j in c["blocks"] if j != 0]
    assert "added blocks [0] have no trainer" in " ".join(fam.validate_plan(from_dict(bare)))
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert "added blocks after base blocks" in out and "lora_fedavg" in out and "per client and round" in out
    art = tmp_path / "art"
    assert main(["emit", str(tmp_path / "a.json"), "-o", str(art)]) == 0
    cfg = yaml.safe_load((art / "runtime.yaml").read_text())
    assert cfg["expansion"]["identity_max_abs_diff"] <= 1e-6
    assert set(cfg["configs"]) == {"plan", "fixed_expansion", "static_allocation", "lora_fedavg", "full_ft"}
    receipt_path = tmp_path / "receipt.json"
    assert main(["run", str(art), "--json", str(receipt_path)]) == 0
    r = json.loads(receipt_path.read_text())
    bc = r["budget_check"]
    assert bc["all_within"] and bc["client_rounds"] == len(d["clients"]), bc
    for check in r["client_rounds"]:                                     # trained exactly the planned layers
        assert check["trained_layers"] == check["planned_layers"]
        assert check["measured_memory_bytes"] <= check["predicted_memory_bytes"] <= check["memory_budget_bytes"]
    assert r["mode"] == "Flower simulation" and len(r["rounds"]) == 2
    from runtime.fed_expand.run import run_in_process

    lora = run_in_process(art, config="lora_fedavg", rounds=1)
    assert lora["method"] == "lora" and lora["budget_check"]["client_rounds"] == 3
    assert lora["final"]["probe_accuracy"] is not None
    i, f = lora["initial"], lora["final"]
    assert i["probe_agreement"] == 1.0                                   # the start is the base model's function
    assert 0 <= i["probe_accuracy"] <= i["probe_top10_accuracy"] <= 1 and f["probe_accuracy"] <= f["probe_top10_accuracy"]
    again = run_in_process(art, config="lora_fedavg", rounds=1, initial=lora["rounds"][0] | {"token_accuracy": -1.0})
    assert again["initial"]["token_accuracy"] == -1.0                   # a given start is used as is, not re-evaluated
