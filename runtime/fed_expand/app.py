"""fed-expand's Flower apps: the server runs `BlockFedAvg` for the planned rounds; each client trains what its
configuration gives it (FedBE: its assigned added blocks; LoRA FedAvg: adapters on every block; full FT:
everything) on its own non-IID share of the instruction data.

Run config: `artifact-dir`, `config` (plan, or a baseline name of runtime.yaml), `num-rounds`, `lr`,
`emulate-sleep`, `rounds-path`, `num-clients`. Node config: `device-id`, `data-partition`, `compute-slowdown`
(host CPU s -> device s), `uplink-bytes-per-s`, `downlink-bytes-per-s`, `latency-s`. Each client's own
per-round ConfigRecord: `method` (blocks | lora | full), `layers` (expanded layer indices it trains, comma
separated), `local-steps`, `batch-size`, `seq-len`, `server-round`.

The strategy sends each client only the tensors it trains (FedBE: its assigned blocks; an added block it does
not train stays, on that client, as it last received it: at identity when it never did) and averages every
tensor over the clients that sent it, weighted by samples (`aggregate_layerwise`, shared with fed-lora);
tensors nobody sent keep their values exactly. Device speeds are EMULATED as in fed-lora: CPU seconds here x
the FLOP/s ratio, plus the bytes exchanged over the device's links.
"""
from __future__ import annotations

import copy
import functools
import logging
import time
from typing import Any, Callable, Iterable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from runtime.fed.federation import (FlowerApps, identify_nodes, make_client_app, make_server_app, report_end,
                                    report_round, sleep_to)
from runtime.fed.lora_strategy import ARRAYS, CONFIG, METRICS, WEIGHT_KEY, aggregate_layerwise, to_numpy, to_record

log = logging.getLogger(__name__)


def parse_layers(text: str) -> list[int]:
    """'3,7' -> [3, 7]; '' -> []."""
    return [int(x) for x in str(text).split(",") if x.strip() != ""]


def layer_of(name: str) -> int | None:
    """Decoder layer index in a tensor name (`model.layers.<i>.` or PEFT's `...model.layers.<i>.`), or None."""
    parts = name.split(".")
    for k in range(len(parts) - 1):
        if parts[k] == "layers" and parts[k + 1].isdigit():
            return int(parts[k + 1])
    return None


# ------------------------------------------------------------------ models and state per method
def initial_state(art: Mapping[str, Any], method: str) -> dict[str, np.ndarray]:
    """The global tensors a run exchanges, at the start: FedBE every added block; LoRA every adapter; full FT every
    parameter."""
    from runtime.fed_expand.model import added_state, base_model, expanded_model, lora_model, lora_params

    if method == "blocks":
        st = added_state(expanded_model(art), list(art["expansion"]["added_layers"]))
    elif method == "lora":
        st = lora_params(lora_model(art))
    else:
        st = {n: p.detach() for n, p in base_model(art).named_parameters()}
    return {k: v.numpy().copy() for k, v in st.items()}


def model_with(art: Mapping[str, Any], method: str, state: Mapping[str, np.ndarray]) -> Any:
    """The process's working model of `method` with `state` loaded (names as `initial_state` gives them).

    One working copy per method and process (building a PEFT model or copying SmolLM2 per client-round costs
    more than the round's steps): gradients are dropped, FedBE's added blocks are reset to their initial
    (identity) values before `state` is loaded, so a client sees exactly the blocks it was sent and identity
    for the others; LoRA and full FT receive every tensor they train."""
    import torch

    from runtime.fed_expand.model import added_state, expanded_model, load_named

    key = (str(art["model"]["name"]), bool(art["model"]["tiny"]), int(art["model"]["seed"]),
           tuple(art["expansion"]["added_after"]))
    m = _working(key, method, art)
    for p in m.parameters():
        p.grad = None
        p.requires_grad_(False)
    if method == "blocks":
        load_named(m, added_state(expanded_model(art), list(art["expansion"]["added_layers"])))
    load_named(m, {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()})
    return m


_WORKING: dict[tuple[Any, str], Any] = {}


def _working(key: Any, method: str, art: Mapping[str, Any]) -> Any:
    from runtime.fed_expand.model import base_model, expanded_model, lora_model

    if (key, method) not in _WORKING:
        _WORKING[(key, method)] = (copy.deepcopy(expanded_model(art)) if method == "blocks" else lora_model(art)
                                   if method == "lora" else copy.deepcopy(base_model(art)))
    return _WORKING[(key, method)]


@functools.lru_cache(maxsize=64)
def _encoded(artifact_dir: str, index: int, clients: int) -> list[tuple[list[int], list[bool]]]:
    from runtime.fed_expand.data import client_examples, encode, tokenizer
    from runtime.fed_expand.model import read_config

    art = read_config(artifact_dir)
    tok, t = tokenizer(), art["training"]
    vocab = int(art["model"]["vocab_size"])
    return [encode(tok, e.prompt, e.answer, int(t["seq_len"]), vocab)
            for e in client_examples(dict(t["data"]), clients, index)]


# ------------------------------------------------------------------ client
def train_client(cfg: Mapping[str, Any], incoming_np: Mapping[str, np.ndarray], run_config: Mapping[str, Any],
                 node: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Train one client's configuration for `local-steps` steps from the received tensors; returns the tensors it
    trained and the receipt metrics."""
    import torch

    from kernels.block_training import StepAccount, run_steps, train_blocks
    from runtime.fed_expand.data import batch
    from runtime.fed_expand.model import decoder, read_config

    torch.set_num_threads(1)
    art = read_config(str(run_config["artifact-dir"]))
    method = str(cfg["method"])
    down_bytes = int(sum(v.nbytes for v in incoming_np.values()))
    model = model_with(art, method, incoming_np)
    layers = parse_layers(cfg.get("layers", ""))
    if method == "blocks":
        params = train_blocks(model, layers)
    elif method == "lora":
        params = [p for n, p in model.named_parameters() if "lora_" in n]
        for n, p in model.named_parameters():
            p.requires_grad_("lora_" in n)
    else:
        params = list(model.parameters())
        for p in params:
            p.requires_grad_(True)
    names = sorted(incoming_np)
    opt = torch.optim.Adam(params, lr=float(run_config.get("lr", 1e-3)))
    part = int(node["data-partition"])
    examples = _encoded(str(run_config["artifact-dir"]), part, int(art["training"]["clients"]))
    g = torch.Generator().manual_seed(int(cfg.get("server-round", 0)) * 100003 + part * 7 + int(art["model"]["seed"]))
    steps, size = int(cfg["local-steps"]), int(cfg["batch-size"])
    pad = int(art["model"].get("pad_token_id", 2)) % int(art["model"]["vocab_size"])
    batches = [batch([examples[int(i)] for i in torch.randint(0, len(examples), (size,), generator=g)], pad)
               for _ in range(steps)]
    wall0 = time.perf_counter()
    dec = decoder(model)
    acc = run_steps(dec, opt, batches, StepAccount())
    cpu_s = acc.forward_cpu_s + acc.backward_cpu_s
    st = acc.state_bytes(model, opt)
    memory = st["frozen_bytes"] + st["trainable_bytes"] + st["grad_bytes"] + st["optimizer_bytes"] + acc.activation_bytes
    trained = sorted({layer_of(n) for n, p in model.named_parameters() if p.grad is not None and layer_of(n) is not None})
    params_by_name = dict(model.named_parameters())
    out = {k: params_by_name[k].detach().numpy().copy() for k in names}
    up_bytes = int(sum(v.nbytes for v in out.values()))
    compute_s = cpu_s * float(node.get("compute-slowdown", 1.0))
    comm_s = (down_bytes / float(node.get("downlink-bytes-per-s", 1e12)) + up_bytes / float(node.get("uplink-bytes-per-s", 1e12))
              + float(node.get("latency-s", 0.0)))
    emulated = compute_s + comm_s
    slept = sleep_to(emulated, time.perf_counter() - wall0) if bool(run_config.get("emulate-sleep", False)) else 0.0
    metrics = {WEIGHT_KEY: len(examples), "trained-layers": trained or [-1], "steps": steps,
               "measured-cpu-s": cpu_s, "emulated-compute-s": compute_s, "emulated-comm-s": comm_s,
               "emulated-round-s": emulated, "slept-s": slept, "measured-memory-bytes": int(memory),
               "measured-activation-bytes": int(acc.activation_bytes), "bytes-down": down_bytes, "bytes-up": up_bytes,
               "loss-first": acc.losses[0], "loss-last": acc.losses[-1]}
    return out, metrics


def client_train(message: Message, run_config: dict[str, Any], node: dict[str, Any]) -> Message:
    """Flower handler: own ConfigRecord and tensors in, trained tensors and receipt metrics out."""
    out, metrics = train_client(dict(message.content[CONFIG]), to_numpy(message.content[ARRAYS]), run_config, node)
    return Message(content=RecordDict({ARRAYS: to_record(out), METRICS: MetricRecord(metrics)}), reply_to=message)


# ------------------------------------------------------------------ evaluation (server side)
def _test_batches(artifact_dir: str, per_task: int | None) -> tuple[tuple[Any, Any, tuple[str, ...]], ...]:
    from runtime.fed_expand.data import held_out_batches
    from runtime.fed_expand.model import read_config

    art = read_config(artifact_dir)
    t = art["training"]
    vocab = int(art["model"]["vocab_size"])
    return held_out_batches(dict(t["data"]), int(t["seq_len"]), vocab, int(art["model"].get("pad_token_id", 2)) % vocab,
                            per_task)


def downstream(model: Any, artifact_dir: str, per_task: int | None = None) -> dict[str, float]:
    """Held-out instruction accuracy, teacher-forced: `exact_match` (every answer token is the argmax) and
    `token_accuracy` (share of answer tokens that are)."""
    from runtime.fed_expand.data import answer_accuracy
    from runtime.fed_expand.model import decoder

    scores = answer_accuracy(decoder(model), _test_batches(artifact_dir, per_task))
    return {"exact_match": scores["exact_match"], "token_accuracy": scores["token_accuracy"]}


PROBE_DOCS, PROBE_TOKENS = 16, 128    # held-out docstrings and the tokens kept of each (about 2 000 positions)


@functools.lru_cache(maxsize=2)
def _probe_ids(vocab: int, max_docs: int, max_tokens: int) -> tuple[Any, ...]:
    import torch

    from runtime.fed_expand.data import tokenizer
    from testbeds.probe import probe_texts

    tok = tokenizer()
    out = []
    for t in probe_texts(max_docs):
        ids = tok(t, add_special_tokens=False)["input_ids"][:max_tokens]
        if len(ids) >= 2:
            out.append(torch.tensor([[i % vocab for i in ids]]))
    return tuple(out)


def probe(model: Any, vocab: int, base_argmax: tuple[Any, ...] | None = None, max_docs: int = PROBE_DOCS,
          max_tokens: int = PROBE_TOKENS) -> dict[str, float]:
    """General ability on held-out natural text (testbeds/probe.py's stdlib docstrings, unused by any training
    set here): next-token top-1 and top-10 accuracy and loss (nats/token), and `probe_agreement`, the share of
    positions where the model's top-1 token is the base model's (1 for the base itself).

    `probe_top10_accuracy` is the retention score: a truncated SmolLM2 is not a working language model (top-1
    4.7 % and 18.3 nats/token on these texts for :4L, worse than a uniform guess's 10.8 nats: its confident
    top-1 is almost always wrong), but it still ranks the right next token among its ten most likely in 17 %
    of positions (chance: 10 / 49 152 = 0.02 %); the full 30-layer model does so in 62 %."""
    import torch

    from runtime.fed_expand.model import decoder

    dec = decoder(model)
    dec.eval()
    right = top10 = agree = n = 0
    loss = 0.0
    with torch.no_grad():
        for k, x in enumerate(_probe_ids(vocab, max_docs, max_tokens)):
            logits = dec(input_ids=x).logits[0, :-1].float()
            top = logits.topk(10, dim=-1).indices
            y = x[0, 1:]
            right += int((top[:, 0] == y).sum())
            top10 += int((top == y[:, None]).any(dim=-1).sum())
            if base_argmax is not None:
                agree += int((top[:, 0] == base_argmax[k]).sum())
            loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            n += x.shape[1] - 1
    out = {"probe_accuracy": right / max(n, 1), "probe_top10_accuracy": top10 / max(n, 1),
           "probe_loss_nats": loss / max(n, 1)}
    if base_argmax is not None:
        out["probe_agreement"] = agree / max(n, 1)
    return out


_BASE_ARGMAX: dict[tuple[Any, ...], tuple[Any, ...]] = {}


def base_argmax(art: Mapping[str, Any]) -> tuple[Any, ...]:
    """The base model's top-1 tokens on the probe texts (cached per model)."""
    import torch

    from runtime.fed_expand.model import base_model

    key = (str(art["model"]["name"]), bool(art["model"]["tiny"]), int(art["model"]["seed"]))
    if key not in _BASE_ARGMAX:
        m = base_model(art)
        with torch.no_grad():
            _BASE_ARGMAX[key] = tuple(m(input_ids=x).logits[0, :-1].argmax(-1)
                                      for x in _probe_ids(int(art["model"]["vocab_size"]), PROBE_DOCS, PROBE_TOKENS))
    return _BASE_ARGMAX[key]


def evaluate(art: Mapping[str, Any], artifact_dir: str, method: str, state: Mapping[str, np.ndarray],
             with_probe: bool = True, per_task: int | None = None) -> dict[str, float]:
    """Downstream (and probe) metrics of the global model."""
    m = model_with(art, method, state)
    out = downstream(m, artifact_dir, per_task)
    if with_probe:
        out.update(probe(m, int(art["model"]["vocab_size"]), base_argmax(art)))
    return out


# ------------------------------------------------------------------ strategy
class BlockFedAvg(Strategy):
    """Per-node configs; each node gets only the tensors of the layers it trains (all tensors for LoRA / full
    FT); per-tensor sample-weighted mean over the nodes that sent it (`aggregate_layerwise`)."""

    def __init__(self, node_configs: Mapping[int, Mapping[str, Any]],
                 on_replies: Callable[[int, dict[str, dict[str, Any]]], None] | None = None) -> None:
        self.node_configs = {int(k): dict(v) for k, v in node_configs.items()}
        self.on_replies = on_replies
        self.current: dict[str, np.ndarray] = {}

    def summary(self) -> None:
        """Log the configuration."""
        log.info("BlockFedAvg: %d clients", len(self.node_configs))

    def keys_for(self, own: Mapping[str, Any]) -> list[str]:
        """Tensor names a node receives and returns."""
        if own["method"] != "blocks":
            return sorted(self.current)
        layers = set(parse_layers(own["layers"]))
        return sorted(k for k in self.current if layer_of(k) in layers)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid | None) -> Iterable[Message]:
        """One message per node: its own ConfigRecord and only its tensors."""
        self.current = to_numpy(arrays)
        messages = []
        for node_id in sorted(self.node_configs):
            own = dict(self.node_configs[node_id])
            own["server-round"] = server_round
            payload = to_record({k: self.current[k] for k in self.keys_for(own)})
            messages.append(Message(content=RecordDict({ARRAYS: payload, CONFIG: ConfigRecord(own)}),
                                    message_type=MessageType.TRAIN, dst_node_id=node_id))
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Per-tensor weighted mean over the replies that carry it; failed replies recorded, not averaged."""
        updates, receipts = [], {}
        for msg in replies:
            node = int(msg.metadata.src_node_id)
            device = str(self.node_configs.get(node, {}).get("device-id", node))
            if msg.has_error():
                receipts[device] = {"error": str(msg.error.reason)}
                continue
            metrics = dict(msg.content[METRICS])
            updates.append((to_numpy(msg.content[ARRAYS]), float(metrics[WEIGHT_KEY])))
            receipts[device] = metrics
        if self.on_replies is not None:
            self.on_replies(server_round, receipts)
        if not updates:
            return None, None
        return to_record(aggregate_layerwise(self.current, updates)), MetricRecord({"clients": len(updates)})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """No client-side evaluation: the server evaluates the global model on held-out data."""
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Nothing to aggregate."""
        return None


def round_configs(art: Mapping[str, Any], config: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """(method, {device id: its per-round ConfigRecord}) of the plan or a baseline; clients with nothing to train
    are left out."""
    from core.errors import ArtifactError

    table = art["configs"]
    if config not in table:
        raise ArtifactError(f"the artifact has no configuration '{config}'", f"use one of: {', '.join(sorted(table))}")
    c = table[config]
    t = art["training"]
    out = {}
    for cid, rec in sorted(c["clients"].items()):
        layers = list(rec.get("layers", []))
        if c["method"] == "blocks" and not layers:
            continue
        out[cid] = {"device-id": cid, "method": c["method"], "layers": ",".join(str(x) for x in layers),
                    "local-steps": int(t["local_steps"]), "batch-size": int(t["batch_size"]), "seq-len": int(t["seq_len"])}
    return str(c["method"]), out


# ------------------------------------------------------------------ server (Flower)
def server_main(grid: Grid, run_config: dict[str, Any]) -> None:
    """Identify nodes, then run the configured rounds; one record per round for the receipt."""
    from runtime.fed_expand.model import read_config

    art_dir = str(run_config["artifact-dir"])
    art = read_config(art_dir)
    method, per_client = round_configs(art, str(run_config["config"]))
    identities = identify_nodes(grid, int(run_config["num-clients"]), timeout_s=float(run_config.get("connect-timeout-s", 180)))
    node_configs = {nid: per_client[str(ident["device-id"])] for nid, ident in identities.items()}
    state = initial_state(art, method)
    report_round(run_config, {"round": 0, "clients": {}, **evaluate(art, art_dir, method, state)})
    replies: dict[int, dict[str, Any]] = {}
    strategy = BlockFedAvg(node_configs, on_replies=lambda r, rec: replies.__setitem__(r, rec))
    last = int(run_config["num-rounds"])

    def evaluate_fn(server_round: int, arrays: Any) -> MetricRecord | None:
        if server_round == 0:
            return None
        res = evaluate(art, art_dir, method, to_numpy(arrays), with_probe=server_round == last)
        report_round(run_config, {"round": server_round, "clients": replies.get(server_round, {}), **res})
        return MetricRecord({k: float(v) for k, v in res.items()})

    strategy.start(grid, to_record(state), num_rounds=last, timeout=float(run_config.get("round-timeout-s", 900)),
                   evaluate_fn=evaluate_fn)
    report_end(run_config)


APPS = FlowerApps(module=__name__, server_main=server_main, client_handlers={"train": client_train})
server_app = make_server_app(server_main)
client_app = make_client_app({"train": client_train})
