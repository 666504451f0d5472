"""The fed-compress Flower apps: digits-cnn trained on a Dirichlet split, per-client compression both ways.

`server_app` and `client_app` are the components a Flower deployment loads by name; the simulation
builds the same apps from `server_main`, `HANDLERS` and `MODS` (see `runtime/fed/federation.py`).

Run config (scalars): `job-path` (the JSON job written by `compress_run.write_job`: schedule, codec,
clients, training settings), `model-path` (the model as a saved `torch.export` program, trained from
its initial weights). Node config: `device-id`, `client-index` (its part of the split),
`compute-scale` (emulated device time per second of compute on this CPU).

Device speeds are EMULATED: a client measures the CPU time of its training on this CPU (one thread,
so other load on the machine does not count) and reports it multiplied by `compute-scale`; link times are payload bytes over the device's bandwidth.
With the job's `emulate_wall_clock` the client also sleeps so the round lasts that long.
"""
from __future__ import annotations

import copy
import json
import time
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from core.errors import PeerError
from runtime.fed.federation import (FlowerApps, identify_nodes, make_client_app, make_server_app, report_end,
                                    report_round, sleep_to)  # first: it turns Flower's telemetry off before flwr is imported
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from runtime.fed.compression import (ARRAYS_KEY, CONFIG_KEY, METRICS_KEY, ClientRound, CodecSettings,
                                     CompressedFedAvg, compression_mod, dense_record,
                                     state_dict_of)
from runtime.fed.data import dirichlet_partition, load_digits_split

MODULE = "runtime.fed.compress_app"


def load_job(path: str) -> dict[str, Any]:
    """The job JSON (cached per process and file version: every client of a run reads the same file)."""
    return _job(path, Path(path).stat().st_mtime_ns)


@lru_cache(maxsize=4)
def _job(path: str, mtime_ns: int) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


@lru_cache(maxsize=4)
def _program(path: str, mtime_ns: int) -> Any:
    return torch.export.load(path)


def load_model(path: str) -> torch.nn.Module:
    """A fresh trainable module from a saved torch.export program (its weights are the initial model).

    `ExportedProgram.module()` shares its parameters with the program, so the cached program is
    never handed out: every caller gets a deep copy (training or loading weights must not change
    what the next caller, possibly another run in the same process, reads as the initial model).
    """
    module = _program(path, Path(path).stat().st_mtime_ns).module()
    with warnings.catch_warnings():   # torch's pytree deprecation notice on copying an exported module
        warnings.simplefilter("ignore", FutureWarning)
        return copy.deepcopy(module)


@lru_cache(maxsize=4)
def _training_module(path: str, mtime_ns: int) -> torch.nn.Module:
    """One module per process for `train` (a copy costs 0.1 s): each call loads every weight and buffer first,
    and the optimizer (plain SGD) is new every call, so nothing carries over between clients or rounds."""
    return load_model(path)


@lru_cache(maxsize=4)
def _split(seed: int, alpha: float, num_clients: int) -> tuple[Any, list[np.ndarray]]:
    data = load_digits_split(seed)
    return data, dirichlet_partition(data.y_train, num_clients, alpha, seed)


def client_data(job: Mapping[str, Any], index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Client `index`'s training images (n, 1, 8, 8) and labels from the job's seeded Dirichlet split."""
    d = job["data"]
    data, parts = _split(int(d["split_seed"]), float(d["alpha"]), int(d["num_clients"]))
    idx = parts[index]
    return torch.from_numpy(data.x_train[idx][:, None]), torch.from_numpy(data.y_train[idx])


def test_data(job: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out test images and labels."""
    data, _ = _split(int(job["data"]["split_seed"]), float(job["data"]["alpha"]), int(job["data"]["num_clients"]))
    return torch.from_numpy(data.x_test[:, None]), torch.from_numpy(data.y_test)


def accuracy(model: torch.nn.Module, weights: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy (fraction) of `model` with `weights`."""
    model.load_state_dict(dict(weights))
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


# ---------------------------------------------------------------- client
def train(message: Message, run_config: Mapping[str, Any], node: Mapping[str, Any]) -> Message:
    """Local SGD: `local-iters` steps at this client's batch, minibatches drawn with a seeded generator."""
    job = load_job(str(run_config["job-path"]))
    cfg = dict(message.content.config_records[CONFIG_KEY])
    index = int(node["client-index"])
    x, y = client_data(job, index)
    torch.set_num_threads(1)
    path = str(run_config["model-path"])
    model = _training_module(path, Path(path).stat().st_mtime_ns)
    model.load_state_dict(state_dict_of(message.content.array_records[ARRAYS_KEY]))   # every tensor overwritten
    opt = torch.optim.SGD(model.parameters(), lr=float(cfg["lr"]))
    gen = torch.Generator().manual_seed(int(job["seed"]) * 1_000_003 + int(cfg["round"]) * 1009 + index)
    iters, batch, n = int(cfg["local-iters"]), int(cfg["batch"]), len(y)
    # CPU time of this thread, not wall time: other processes on a shared machine must not slow the emulated device
    t0, w0 = time.thread_time(), time.perf_counter()
    loss_sum = 0.0
    for it in range(iters):
        if bool(cfg["drop"]) and it == iters // 2:
            # Emulated failure half-way through local training: the device received the model and never answers.
            raise RuntimeError(f"emulated dropout of {node['device-id']} in round {cfg['round']}")
        pick = (torch.randperm(n, generator=gen)[:batch] if batch <= n
                else torch.randint(0, n, (batch,), generator=gen))
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[pick]), y[pick])
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach())
    train_s = time.thread_time() - t0
    wall_s = time.perf_counter() - w0
    compute_s = train_s * float(node["compute-scale"])
    slept = sleep_to(compute_s, wall_s) if job.get("emulate_wall_clock") else 0.0
    metrics = MetricRecord({"num-examples": n, "train-s-measured": train_s, "train-wall-s": wall_s,
                            "compute-s-emulated": compute_s,
                            "slept-s": slept, "loss": loss_sum / max(iters, 1)})
    weights = {k: v.detach() for k, v in model.state_dict().items()}
    return Message(content=RecordDict({ARRAYS_KEY: dense_record(weights), METRICS_KEY: metrics}), reply_to=message)


HANDLERS = {"train": train}


# ---------------------------------------------------------------- server
def strategy_for(job: Mapping[str, Any], nodes: Mapping[str, int], initial: Mapping[str, torch.Tensor]) -> CompressedFedAvg:
    """The job's schedule and codec as a `CompressedFedAvg`."""
    clients = {c["id"]: c for c in job["clients"]}
    schedule = {int(r["round"]): {cid: ClientRound(float(s["keep_down"]), float(s["keep_up"]), int(s["batch"]),
                                                   bool(s.get("drop", False)), dict(s.get("predicted", {})))
                                  for cid, s in r["clients"].items()}
                for r in job["rounds"]}
    c = job["codec"]
    codec = CodecSettings(up_codec=str(c["up_codec"]), quant_bits=int(c.get("quant_bits", 0)),
                          error_feedback=bool(c.get("error_feedback", False)), recovery=bool(c.get("recovery", True)),
                          min_numel=int(c.get("min_numel", 1024)), seed=int(job["seed"]),
                          diagnostics=bool(job.get("diagnostics", False)))
    links = {cid: {"downlink-bytes-per-s": float(cl["downlink_bytes_per_s"]),
                   "uplink-bytes-per-s": float(cl["uplink_bytes_per_s"]), "latency-s": float(cl["latency_s"])}
             for cid, cl in clients.items()}
    return CompressedFedAvg(schedule, nodes, {cid: int(cl["samples"]) for cid, cl in clients.items()}, codec,
                            {"local-iters": int(job["training"]["local_iters"]), "lr": float(job["training"]["lr"])},
                            links, initial, {cid: int(cl["index"]) for cid, cl in clients.items()})


def server_main(grid: Grid, run_config: dict[str, Any]) -> None:
    """Identify the clients, run the schedule, report every round.

    Nothing is installed first: a device's first download is the dense model (docs/fed-compress.md, "Accounting").
    """
    job = load_job(str(run_config["job-path"]))
    model = load_model(str(run_config["model-path"]))
    initial = {k: v.detach().clone().to(torch.float32) for k, v in model.state_dict().items()}
    expected = len(job["clients"])
    identities = identify_nodes(grid, expected, timeout_s=float(job.get("connect_timeout_s", 120)))
    nodes = {str(cfg["device-id"]): node_id for node_id, cfg in identities.items()}
    missing = sorted(set(c["id"] for c in job["clients"]) - set(nodes))
    if missing:
        raise PeerError(f"clients {', '.join(missing[:3])} did not connect", "check the SuperNode logs")
    strategy = strategy_for(job, nodes, initial)
    x_test, y_test = test_data(job)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        acc = accuracy(model, state_dict_of(arrays), x_test, y_test)
        record = strategy.records.pop(server_round, {"round": server_round, "clients": {}})
        record["accuracy"] = acc
        report_round(run_config, record)
        return MetricRecord({"accuracy": acc})

    strategy.start(grid, dense_record(initial), num_rounds=len(job["rounds"]),
                   timeout=float(job.get("round_timeout_s", 300)), evaluate_fn=evaluate)
    report_end(run_config)


MODS = (compression_mod,)
APPS = FlowerApps(module=MODULE, server_main=server_main, client_handlers=HANDLERS, client_mods=MODS)
server_app = make_server_app(server_main)
client_app = make_client_app(HANDLERS, mods=MODS)
