"""fed-lora runtime: layer-wise aggregation (FedAvg-exact at full depth), the artifact loader against codegen,
clients training exactly their planned depth, and 3 clients x 2 rounds through Flower's deployment engine."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.runtime.fed_lora_artifact import make_artifact

CLIENTS = {"agx-0": (4, 0), "nano-0": (3, 1), "phone-0": (1, 1)}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_artifact(tmp_path_factory.mktemp("fedlora-art"), CLIENTS)


def test_layerwise_aggregation_is_fedavg_at_full_depth_and_per_layer_otherwise() -> None:
    from flwr.app import ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    from runtime.fed.lora_strategy import aggregate_layerwise, to_numpy, to_record

    rng = np.random.default_rng(0)
    keys = [f"enc.layer.{b}.q.lora_{ab}" for b in range(3) for ab in "AB"] + ["classifier.weight"]
    prev = {k: rng.standard_normal((4, 3)).astype(np.float32) for k in keys}
    ups = [({k: rng.standard_normal((4, 3)).astype(np.float32) for k in keys}, float(n)) for n in (10, 30, 7)]
    ours = aggregate_layerwise(prev, ups)
    flower = to_numpy(aggregate_arrayrecords(
        [RecordDict({"arrays": to_record(a), "metrics": MetricRecord({"num-examples": n})}) for a, n in ups],
        "num-examples"))
    for k in keys:
        assert np.array_equal(ours[k], flower[k]), k          # bit for bit
    assert isinstance(to_record(ours), ArrayRecord)
    # mixed depths: block 0 trained by client 0 only, block 2 by everyone, nothing for an untrained tensor
    mixed = [({k: v for k, v in ups[0][0].items()}, 10.0),
             ({k: v for k, v in ups[1][0].items() if "layer.0" not in k}, 30.0),
             ({k: v for k, v in ups[2][0].items() if "layer.2" in k or "classifier" in k}, 7.0)]
    prev2 = {**prev, "enc.layer.9.q.lora_A": np.ones((2, 2), np.float32)}
    out = aggregate_layerwise(prev2, mixed)
    k0, k1, k2 = "enc.layer.0.q.lora_A", "enc.layer.1.q.lora_A", "enc.layer.2.q.lora_A"
    assert np.allclose(out[k0], ups[0][0][k0])
    assert np.allclose(out[k1], (10 * ups[0][0][k1] + 30 * ups[1][0][k1]) / 40, atol=1e-6)
    assert np.allclose(out[k2], (10 * ups[0][0][k2] + 30 * ups[1][0][k2] + 7 * ups[2][0][k2]) / 47, atol=1e-6)
    assert np.array_equal(out["enc.layer.9.q.lora_A"], prev2["enc.layer.9.q.lora_A"])


def test_keys_for_depth_and_per_node_configs_are_separate_objects() -> None:
    from runtime.fed.lora_strategy import keys_for_depth

    keys = [f"e.layer.{b}.q.lora_A" for b in range(4)] + ["classifier.weight", "classifier.bias"]
    assert keys_for_depth(keys, "e.layer", 4, 1) == sorted(["e.layer.3.q.lora_A", "classifier.weight", "classifier.bias"])
    assert len(keys_for_depth(keys, "e.layer", 4, 4)) == 6


def test_runtime_loader_matches_codegen(artifact: Path) -> None:
    from codegen.fed_lora import DeviceDecision, LoraSpec, build_device_model
    from runtime.fed.lora_model import base_model, device_model, initial_lora, load_artifact

    art = load_artifact(artifact)
    spec = LoraSpec.from_dict(art.lora)
    x = torch.rand(5, 8, 8)
    for cid, (d, q) in CLIENTS.items():
        blocks = tuple(range(4 - d, 4 - d + q))
        ours = device_model(art, base_model(art), d, blocks, 8, initial_lora(art))
        ref = build_device_model(base_model(art), spec, DeviceDecision(d, blocks, 8), adapter_state=initial_lora(art))
        n1 = sorted(n for n, p in ours.module.named_parameters() if p.requires_grad)
        n2 = sorted(n for n, p in ref.module.named_parameters() if p.requires_grad)
        assert n1 == n2 and ours.trainable_blocks == ref.trainable_blocks
        with torch.no_grad():
            assert torch.equal(ours.module.eval()(x), ref.module.eval()(x))


def test_clients_train_their_planned_depth_and_memory_is_counted(artifact: Path) -> None:
    from runtime.fed.lora_app import train_client
    from runtime.fed.lora_model import initial_lora, load_artifact
    from runtime.fed.lora_strategy import keys_for_depth

    art = load_artifact(artifact)
    state = {k: v.numpy() for k, v in initial_lora(art).items()}
    ids = sorted(CLIENTS)
    mems = {}
    for i, cid in enumerate(ids):
        c = dict(art.clients()[cid])
        keys = keys_for_depth(state, art.lora["blocks_path"], 4, c["lora-depth"])
        out, m = train_client({**c, "server-round": 1}, {k: state[k] for k in keys},
                              {"artifact-dir": str(artifact), "lr": 3e-3}, {"device-id": cid, "data-partition": i,
                                                                            "num-partitions": 3, "compute-slowdown": 0.5})
        d = CLIENTS[cid][0]
        assert m["trained-blocks"] == list(range(4 - d, 4))
        assert sorted(out) == keys                       # it sends back exactly the tensors of its blocks and head
        assert m["emulated-compute-s"] == pytest.approx(0.5 * m["measured-cpu-s"])
        mems[cid] = m["measured-memory-bytes"]
        assert m["bytes-up"] == m["bytes-down"]
    assert mems["phone-0"] < mems["nano-0"] < mems["agx-0"]
    # Client models share the cached base model's frozen tensors (no copy per client round): after three clients
    # trained (the digits head included), the base weights are still the emitted ones, and a copy shares them.
    from safetensors.torch import load_file

    from runtime.fed.lora_model import base_model

    emitted = load_file(str(artifact / "model" / "weights.safetensors"))
    one, two = base_model(art), base_model(art)
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values()):
        assert a.data_ptr() == b.data_ptr()
        assert torch.equal(a, emitted[name]), name


def _flower_pids(under: Path) -> set[int]:
    """Live Flower processes whose working directory lies under `under` (the launcher starts them there)."""
    out = set()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().decode(errors="ignore")
            cwd = str((p / "cwd").resolve())
            state = (p / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            continue
        if ("flower-super" in cmd or "flwr-" in cmd) and state != "Z" and cwd.startswith(str(under.resolve())):
            out.add(int(p.name))
    return out


def test_deployment_engine_three_clients_two_rounds(artifact: Path, tmp_path: Path) -> None:
    """The process boundary under test: SuperLink + 3 SuperNodes on loopback, started and stopped here."""
    from runtime.fed.lora_run import run_fed_lora

    seen: list[int] = []
    receipt = run_fed_lora(artifact, mode="deploy", rounds=2, workdir=tmp_path / "run",
                           on_round=lambda r: seen.append(r["round"]), timeout_s=400)
    assert seen == [0, 1, 2]
    assert [r["round"] for r in receipt["rounds"]] == [0, 1, 2]
    for cid, (d, _) in CLIENTS.items():
        e = receipt["devices"][cid]
        assert e["rounds"] == 2, e
        assert e["trained_planned_depth"] and e["trained_blocks"] == list(range(4 - d, 4)), e
        assert e["measured_memory_bytes"] > 0 and e["emulated_round_s"] > 0
    assert (tmp_path / "run" / "logs" / "superlink.log").exists()
    # no process of this run is left behind
    assert _flower_pids(tmp_path) == set()

