"""fed-lora's Flower apps: the server runs `LayerwiseLoRA` for the planned rounds, each client trains the
LoRA depth its plan gave it on its own non-IID share of the artifact's task: digits (Dirichlet over classes),
or the instruction test bed (`testbeds/instruct.py`, non-IID by task; data and held-out scoring shared with
fed-expand, `runtime/fed_expand/data.py`), where held-out "accuracy" is the teacher-forced answer-token accuracy.

Run config (the same for every app of the run): `artifact-dir`, `num-rounds`, `baseline` ("" = the
plan), `lr`, `data-alpha`, `data-seed`, `emulate-sleep`, `rounds-path`, `num-clients`.
Node config (one per client): `device-id`, `data-partition`, `num-partitions`, `compute-slowdown`
(host CPU seconds -> emulated device seconds), `uplink-bytes-per-s`, `downlink-bytes-per-s`, `latency-s`.
The per-round config each client receives (its own `ConfigRecord`): `lora-depth`, `act-quant-blocks`,
`act-bits`, `local-steps`, `batch-size`, plus the server round.

Device speeds are EMULATED: a client measures the CPU seconds of its local steps on this machine and
multiplies them by its `compute-slowdown` (this CPU's measured FLOP/s over the device profile's); link
time is the bytes actually exchanged over the device's links plus its latency. With `emulate-sleep` the
client also sleeps until its wall time reaches the emulated round time (deployment), so slow devices
are slow on the wire too.
"""
from __future__ import annotations

import functools
import logging
import time
from typing import Any

import numpy as np
from flwr.app import Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from runtime.fed.data import dirichlet_partition, load_digits_split
from runtime.fed.federation import (FlowerApps, identify_nodes, make_client_app, make_server_app, report_end,
                                    report_round, sleep_to)
from runtime.fed.lora_strategy import ARRAYS, CONFIG, METRICS, WEIGHT_KEY, LayerwiseLoRA, to_numpy, to_record

# torch, PEFT and the model are imported inside the functions that train or evaluate: Flower loads this module
# in every app process, and the identity query should not pay for them.

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ client
def _partition(run_config: dict[str, Any], node: dict[str, Any]) -> np.ndarray:
    data = load_digits_split(int(run_config.get("data-seed", 0)))
    parts = dirichlet_partition(data.y_train, int(node["num-partitions"]), float(run_config.get("data-alpha", 0.3)),
                                seed=int(run_config.get("data-seed", 0)))
    return parts[int(node["data-partition"])]


def _bytes(tensors: list[Any]) -> int:
    from kernels.saved_activations import storage_key

    seen = {storage_key(t): int(t.untyped_storage().nbytes()) for t in tensors}
    return sum(seen.values())


def _client_batches(art: Any, cfg: dict[str, Any], run_config: dict[str, Any],
                    node: dict[str, Any]) -> tuple[list[tuple[Any, Any]], int]:
    """This round's `local-steps` batches of the client's share (seeded by round and partition) and the share's
    size (its aggregation weight). Digits: (images, labels); instruction: (token ids, answer mask)."""
    import torch

    g = torch.Generator().manual_seed(int(cfg.get("server-round", 0)) * 100003 + int(node["data-partition"]))
    steps, size = int(cfg["local-steps"]), int(cfg["batch-size"])
    if art.config["model"]["task"] == "instruct":
        examples = _encoded(str(art.path), int(node["data-partition"]), int(node["num-partitions"]))
        pad = _pad(art.config["model"])
        from runtime.fed_expand.data import batch

        # Padded to the plan's sequence length: the shapes the plan's time and memory model were measured at (a causal
        # LM's right pads change no real token's output and are never targets). Padding to the batch's longest
        # example instead ran the steps ~35 % below the profile's time on SmolLM2:4L (benchmarks/fed_lora_roundtime).
        length = int(art.config["training"]["seq_len"])
        return [batch([examples[int(i)] for i in torch.randint(0, len(examples), (size,), generator=g)], pad, length)
                for _ in range(steps)], len(examples)
    idx = _partition(run_config, node)
    data = load_digits_split(int(run_config.get("data-seed", 0)))
    x = torch.from_numpy(data.x_train[idx])
    y = torch.from_numpy(data.y_train[idx])
    out = []
    for _ in range(steps):
        pick = torch.randint(0, len(idx), (size,), generator=g)
        out.append((x[pick], y[pick]))
    return out, len(idx)


def _loss(model: Any, batch: tuple[Any, Any]) -> Any:
    """The task's training loss: answer-token cross-entropy (instruction) or class cross-entropy (digits)."""
    import torch

    if hasattr(model, "answer_loss"):
        return model.answer_loss(*batch)
    return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])


def _pad(model_cfg: dict[str, Any]) -> int:
    return int(model_cfg.get("pad_token_id", 2)) % int(model_cfg["vocab_size"])


@functools.lru_cache(maxsize=64)
def _encoded(artifact_dir: str, index: int, clients: int) -> list[tuple[list[int], list[bool]]]:
    """Client `index`'s instruction examples encoded (fed-expand's split and encoding)."""
    from runtime.fed.lora_model import load_artifact
    from runtime.fed_expand.data import client_examples, encode, tokenizer

    art = load_artifact(artifact_dir)
    t = art.config["training"]
    tok, vocab = tokenizer(), int(art.config["model"]["vocab_size"])
    return [encode(tok, e.prompt, e.answer, int(t["seq_len"]), vocab)
            for e in client_examples(dict(t["data"]), clients, index)]


def train_client(cfg: dict[str, Any], incoming_np: dict[str, np.ndarray], run_config: dict[str, Any],
                 node: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Train one client's plan for `local-steps` steps from the received tensors; returns its trained tensors
    (its blocks' adapters and the head) and the receipt metrics. The Flower handler below wraps it."""
    import torch

    from kernels.lora_state import lora_state
    from kernels.saved_activations import SavedTensorLedger, parameter_storages
    from runtime.fed.lora_model import base_model, device_model, load_artifact, parse_blocks

    from kernels.malloc_policy import pin_mmap_threshold

    pin_mmap_threshold()      # resident memory follows the live bytes the plan predicts (kernels/malloc_policy.py)
    torch.set_num_threads(1)
    incoming = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in incoming_np.items()}
    down_bytes = sum(int(v.numel() * v.element_size()) for v in incoming.values())
    art = load_artifact(str(run_config["artifact-dir"]))
    depth = int(cfg["lora-depth"])
    quant = parse_blocks(cfg.get("act-quant-blocks", ""))
    ledger = SavedTensorLedger()
    dev = device_model(art, base_model(art), depth, quant, int(cfg.get("act-bits", 8)), incoming, ledger)
    model = dev.module
    ledger.skip = parameter_storages(model)
    model.train()
    batches, n_samples = _client_batches(art, cfg, run_config, node)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=float(run_config.get("lr", 3e-3)))
    steps = int(cfg["local-steps"])
    wall0, cpu0 = time.perf_counter(), time.process_time()
    trained: set[int] = set()
    peak_act = 0
    losses = []
    blocks = model.get_submodule(art.lora["blocks_path"])
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        ledger.reset()
        with ledger.counting():
            loss = _loss(model, batches[step])
        peak_act = max(peak_act, ledger.activation_bytes)
        loss.backward()
        if step == 0:
            trained = {i for i in range(art.num_blocks)
                       if any("lora_" in n and p.grad is not None for n, p in blocks[i].named_parameters())}
        opt.step()
        losses.append(loss.item())
    cpu_s = time.process_time() - cpu0
    frozen = [p for p in model.parameters() if not p.requires_grad] + list(model.buffers())
    grads = [p.grad for p in trainable if p.grad is not None]
    states = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
    memory = _bytes(frozen) + _bytes(trainable) + _bytes(grads) + _bytes(states) + peak_act
    out = {k: v.numpy() for k, v in lora_state(model).items()}
    up_bytes = sum(int(v.nbytes) for v in out.values())
    compute_s = cpu_s * float(node.get("compute-slowdown", 1.0))
    comm_s = (down_bytes / float(node.get("downlink-bytes-per-s", 1e12)) + up_bytes / float(node.get("uplink-bytes-per-s", 1e12))
              + float(node.get("latency-s", 0.0)))
    emulated = compute_s + comm_s
    slept = sleep_to(emulated, time.perf_counter() - wall0) if bool(run_config.get("emulate-sleep", False)) else 0.0
    dev.remove_hooks()
    metrics = {
        WEIGHT_KEY: int(n_samples), "lora-depth": depth, "trained-blocks": sorted(trained) or [-1],
        "quant-blocks": len(quant), "steps": steps, "measured-cpu-s": cpu_s, "emulated-compute-s": compute_s,
        "emulated-comm-s": comm_s, "emulated-round-s": emulated, "slept-s": slept,
        "measured-memory-bytes": int(memory), "measured-activation-bytes": int(peak_act),
        "bytes-down": down_bytes, "bytes-up": up_bytes, "loss-first": losses[0], "loss-last": losses[-1]}
    return out, metrics


def client_train(message: Message, run_config: dict[str, Any], node: dict[str, Any]) -> Message:
    """Flower handler: its own ConfigRecord and tensors in, trained tensors and receipt metrics out."""
    out, metrics = train_client(dict(message.content[CONFIG]), to_numpy(message.content[ARRAYS]), run_config, node)
    return Message(content=RecordDict({ARRAYS: to_record(out), METRICS: MetricRecord(metrics)}), reply_to=message)


# ------------------------------------------------------------------ server
def evaluate_global(art: Any, state: dict[str, np.ndarray]) -> tuple[float, float]:
    """(accuracy, loss) of the base model with the global adapters at full depth on the held-out set: digits
    accuracy, or the instruction test bed's teacher-forced answer-token accuracy and answer loss (nats)."""
    import torch

    from runtime.fed.lora_model import base_model, device_model

    torch.set_num_threads(1)
    tensors = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}
    dev = device_model(art, base_model(art), art.num_blocks, (), 8, tensors)
    model = dev.module.eval()
    if art.config["model"]["task"] == "instruct":
        from runtime.fed_expand.data import answer_accuracy, held_out_batches

        t = art.config["training"]
        held = held_out_batches(dict(t["data"]), int(t["seq_len"]), int(art.config["model"]["vocab_size"]),
                                _pad(art.config["model"]))
        scores = answer_accuracy(model.model, held)
        dev.remove_hooks()
        return float(scores["token_accuracy"]), float(scores["answer_loss_nats"])
    data = load_digits_split(int(art.config["training"]["data"]["seed"]))
    with torch.no_grad():
        logits = model(torch.from_numpy(data.x_test))
        loss = float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(data.y_test)))
        acc = float((logits.argmax(-1).numpy() == data.y_test).mean())
    dev.remove_hooks()
    return acc, loss


def plan_node_configs(plan_clients: Any, identities: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each Flower node's own per-round config from the plan's (or a baseline's) client table."""
    node_configs = {}
    for node_id, ident in identities.items():
        dev = str(ident["device-id"])
        c = plan_clients[dev]
        node_configs[node_id] = {"device-id": dev, "lora-depth": int(c["lora-depth"]),
                                 "act-quant-blocks": str(c["act-quant-blocks"]), "act-bits": int(c["act-bits"]),
                                 "local-steps": int(c["local-steps"]), "batch-size": int(c["batch-size"])}
    return node_configs


def server_main(grid: Grid, run_config: dict[str, Any]) -> None:
    """Identify the clients, then run the planned rounds with layer-wise aggregation; one record per round."""
    from runtime.fed.lora_model import initial_lora, load_artifact

    art = load_artifact(str(run_config["artifact-dir"]))
    baseline = str(run_config.get("baseline", "")) or None
    plan_clients = art.clients(baseline)
    identities = identify_nodes(grid, int(run_config["num-clients"]), timeout_s=float(run_config.get("connect-timeout-s", 180)))
    node_configs = plan_node_configs(plan_clients, identities)
    state = {k: v.numpy() for k, v in initial_lora(art).items()}
    acc0, loss0 = evaluate_global(art, state)
    report_round(run_config, {"round": 0, "accuracy": acc0, "loss": loss0, "emulated_round_s": 0.0, "clients": {}})
    replies: dict[int, dict[str, dict[str, Any]]] = {}
    strategy = LayerwiseLoRA(node_configs, art.lora["blocks_path"], art.num_blocks,
                             on_replies=lambda r, rec: replies.__setitem__(r, rec))

    def evaluate_fn(server_round: int, arrays: Any) -> MetricRecord:
        acc, loss = evaluate_global(art, to_numpy(arrays))
        rec = replies.get(server_round, {})
        times = [float(m["emulated-round-s"]) for m in rec.values() if "emulated-round-s" in m]
        report_round(run_config, {"round": server_round, "accuracy": acc, "loss": loss,
                                  "emulated_round_s": max(times) if times else 0.0, "clients": rec})
        return MetricRecord({"accuracy": acc, "loss": loss})

    strategy.start(grid, to_record(state), num_rounds=int(run_config["num-rounds"]),
                   timeout=float(run_config.get("round-timeout-s", 600)), evaluate_fn=lambda r, a: (
                       None if r == 0 else evaluate_fn(r, a)))
    report_end(run_config)


APPS = FlowerApps(module=__name__, server_main=server_main, client_handlers={"train": client_train})
server_app = make_server_app(server_main)
client_app = make_client_app({"train": client_train})
